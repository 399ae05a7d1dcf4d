"""Mapping robot embodiments into the 21-point hand-keypoint space, and camera-frame geometry.

DexWM's recipe for a parallel gripper (DESIGN.md s.2, DROID): the wrist is the end-effector
position; 20 dummy finger points lie on a horizontal circle (world z = end-effector height) around
it, 5 angles (one per finger, thumb..little) x 4 radii (joints 1..4 of that finger). Radii are
3/4/5/6 cm when the gripper is open (gripper position < 0.5) and 3/4/3.5/3 cm when closed.
"""

from __future__ import annotations

import numpy as np

OPEN_RADII = (0.03, 0.04, 0.05, 0.06)
CLOSED_RADII = (0.03, 0.04, 0.035, 0.03)
N_ANGLES = 5


def gripper_keypoints(
    ee_pos: np.ndarray, gripper: np.ndarray, threshold: float = 0.5
) -> np.ndarray:
    """End-effector positions (T, 3) + gripper closure in [0, 1] (T,) -> (T, 21, 3) keypoints, in the
    same (world / base) frame as `ee_pos`. Point 1 + 4*a + r is angle a, radius r (MANO order)."""
    ee_pos = np.asarray(ee_pos, dtype=np.float64)
    closed = np.asarray(gripper, dtype=np.float64) >= threshold  # (T,)
    radii = np.where(closed[:, None], CLOSED_RADII, OPEN_RADII)  # (T, 4)
    theta = 2 * np.pi * np.arange(N_ANGLES) / N_ANGLES  # (5,)
    offsets = np.zeros((len(ee_pos), N_ANGLES, len(OPEN_RADII), 3))
    offsets[..., 0] = radii[:, None, :] * np.cos(theta)[None, :, None]
    offsets[..., 1] = radii[:, None, :] * np.sin(theta)[None, :, None]
    fingers = ee_pos[:, None, None, :] + offsets  # (T, 5, 4, 3)
    return np.concatenate([ee_pos[:, None, :], fingers.reshape(-1, 20, 3)], axis=1)


def euler_xyz_to_matrix(euler: np.ndarray) -> np.ndarray:
    """Extrinsic xyz Euler angles (..., 3) -> rotation matrices (..., 3, 3) (scipy's 'xyz')."""
    from scipy.spatial.transform import Rotation

    e = np.asarray(euler, dtype=np.float64)
    return Rotation.from_euler("xyz", e.reshape(-1, 3)).as_matrix().reshape(*e.shape[:-1], 3, 3)


def matrix_to_euler_xyz(R: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    R = np.asarray(R, dtype=np.float64)
    return Rotation.from_matrix(R.reshape(-1, 3, 3)).as_euler("xyz").reshape(*R.shape[:-2], 3)


def world_to_camera(points: np.ndarray, cam_pos: np.ndarray, cam_R: np.ndarray) -> np.ndarray:
    """Points (..., 3) in the world -> the camera frame of a camera at `cam_pos` whose axes are the
    columns of `cam_R` (OpenCV convention: x right, y down, z forward)."""
    return (np.asarray(points) - cam_pos) @ cam_R


def project(points_cam: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Camera-frame points (..., 3) -> pixels (..., 2) with intrinsics K (3, 3)."""
    p = np.asarray(points_cam, dtype=np.float64)
    z = np.clip(p[..., 2:3], 1e-6, None)
    uv = p[..., :2] / z
    return uv * np.array([K[0, 0], K[1, 1]]) + np.array([K[0, 2], K[1, 2]])


def relative_camera(camera: np.ndarray) -> np.ndarray:
    """Camera poses (T, 6: position + Euler xyz, in some reference frame) -> the same poses in the
    camera frame of the first of them."""
    R = euler_xyz_to_matrix(camera[:, 3:])  # (T, 3, 3)
    R0 = R[0]
    pos = (camera[:, :3] - camera[0, :3]) @ R0  # R0^T (p_t - p_0), row form
    rot = np.einsum("ji,tjk->tik", R0, R)  # R0^T R_t
    return np.concatenate([pos, matrix_to_euler_xyz(rot)], axis=-1)
