"""Actions from hand keypoints (+ camera motion), and per-dimension normalisation.

State of a frame (DexWM): 21 left + 21 right 3D hand keypoints and the camera position + Euler xyz,
all in the camera frame of the clip's FIRST sampled frame. Action i = state(i+1) - state(i), plus,
as an addition of ours, one flag per hand saying whether that hand's motion is known (the hand was
valid in both frames). A hand that is not known contributes zero motion and flag 0, so the model can
tell "did not move" from "not seen". Layout (134 = 126 + 6 + 2):
  [0:63) left hand xyz deltas, [63:126) right hand, [126:129) camera position delta,
  [129:132) camera Euler delta (wrapped to (-pi, pi]), [132:134) left / right hand known.
"""

from __future__ import annotations

import math

import numpy as np
import torch

HAND_DIMS = 2 * 21 * 3
CAMERA_DIMS = 6
ACTION_DIM = HAND_DIMS + CAMERA_DIMS + 2


def _euler_xyz_to_matrix(e: torch.Tensor) -> torch.Tensor:
    """Extrinsic xyz Euler angles (..., 3) -> (..., 3, 3), R = Rz @ Ry @ Rx (scipy 'xyz')."""
    cx, cy, cz = e.cos().unbind(-1)
    sx, sy, sz = e.sin().unbind(-1)
    one, zero = torch.ones_like(cx), torch.zeros_like(cx)
    Rx = torch.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], -1).unflatten(-1, (3, 3))
    Ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).unflatten(-1, (3, 3))
    Rz = torch.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], -1).unflatten(-1, (3, 3))
    return Rz @ Ry @ Rx


def _matrix_to_euler_xyz(R: torch.Tensor) -> torch.Tensor:
    """Inverse of `_euler_xyz_to_matrix` (away from gimbal lock)."""
    y = torch.asin((-R[..., 2, 0]).clamp(-1, 1))
    x = torch.atan2(R[..., 2, 1], R[..., 2, 2])
    z = torch.atan2(R[..., 1, 0], R[..., 0, 0])
    return torch.stack([x, y, z], -1)


def keypoint_actions(
    hands: torch.Tensor,
    valid: torch.Tensor,
    camera: torch.Tensor | None = None,
) -> torch.Tensor:
    """hands (..., T, 2, 21, 3) camera-frame keypoints of each frame; valid (..., T, 2) bool;
    camera (..., T, 6) camera poses (position + Euler xyz) in a common reference frame, or None for
    a static camera. Returns raw actions (..., T-1, ACTION_DIM)."""
    hands = hands.to(torch.float32)
    valid = valid.to(torch.bool)
    if camera is not None and bool((camera != 0).any()):
        R = _euler_xyz_to_matrix(camera[..., 3:].float())  # (..., T, 3, 3)
        p = camera[..., :3].float()  # (..., T, 3)
        R0, p0 = R[..., :1, :, :].expand_as(R), p[..., :1, :]
        # point in camera t -> reference frame -> camera of the first sampled frame
        world = torch.einsum("...tij,...thkj->...thki", R, hands) + p[..., None, None, :]
        hands = torch.einsum("...tji,...thkj->...thki", R0, world - p0[..., None, None, :])
        cam_pos = torch.einsum("...tji,...tj->...ti", R0, p - p0)  # R0^T (p_t - p0)
        cam_rot = _matrix_to_euler_xyz(R0.transpose(-1, -2) @ R)
        cam_state = torch.cat([cam_pos, cam_rot], -1)  # (..., T, 6)
    else:
        cam_state = hands.new_zeros(*hands.shape[:-3], CAMERA_DIMS)
    known = valid[..., 1:, :] & valid[..., :-1, :]  # (..., T-1, 2)
    d_hands = (hands[..., 1:, :, :, :] - hands[..., :-1, :, :, :]) * known[..., None, None]
    d_cam = cam_state[..., 1:, :] - cam_state[..., :-1, :]
    d_rot = torch.remainder(d_cam[..., 3:] + math.pi, 2 * math.pi) - math.pi
    return torch.cat([d_hands.flatten(-3), d_cam[..., :3], d_rot, known.float()], dim=-1)


def keypoint_actions_static(hands: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """NumPy fast path of `keypoint_actions` for one clip seen by a static camera (the loader's
    common case): hands (T, 2, 21, 3), valid (T, 2) -> (T-1, ACTION_DIM) float32."""
    known = valid[1:] & valid[:-1]  # (T-1, 2)
    d = (hands[1:] - hands[:-1]).astype(np.float32) * known[:, :, None, None]  # (T-1, 2, 21, 3)
    out = np.zeros((len(known), ACTION_DIM), np.float32)
    out[:, :HAND_DIMS] = d.reshape(len(known), HAND_DIMS)
    out[:, HAND_DIMS + CAMERA_DIMS :] = known
    return out
