"""Joint space -> the world model's actions, batched (DexWM's planner action space, DESIGN.md s.2).

A plan is a sequence of commanded joint targets q_1..q_H (H, J) following the current targets q_0.
All candidates of a planning iteration at once:

    q (B, H + 1, J) -> batched FK (dexwm.sim.KeypointFK) -> right-hand keypoints (B, H + 1, 21, 3)
    in the camera frame -> `dexwm.actions.keypoint_actions` (left hand unknown, static camera)
    -> raw actions (B, H, 134); the world model normalises them.

Candidates are clipped to the joint limits before FK, so what the model sees is what the rig
would be commanded (the rig clips the same way).
"""

from __future__ import annotations

import numpy as np
import torch

from dexwm.actions import ACTION_DIM, keypoint_actions
from dexwm.schema import NUM_KEYPOINTS


class JointSpace:
    """Commanded joint targets of one rig -> hand keypoints and raw model actions.

    fk: q (N, J) -> (N, 21, 3) camera-frame keypoints (e.g. `KeypointFK`); limits (J, 2);
    n_arm: leading arm joints (the rest are hand joints); dt: seconds per control step."""

    def __init__(self, fk: torch.nn.Module, limits: np.ndarray, n_arm: int, dt: float = 0.1):
        limits = torch.as_tensor(np.asarray(limits), dtype=torch.float32)
        if limits.ndim != 2 or limits.shape[1] != 2:
            raise ValueError(f"limits must be (J, 2), got {tuple(limits.shape)}")
        self.fk = fk
        self.lower, self.upper = limits[:, 0].contiguous(), limits[:, 1].contiguous()
        self.n_joints, self.n_arm, self.dt = limits.shape[0], int(n_arm), float(dt)

    @classmethod
    def from_rig(cls, rig) -> JointSpace:
        from dexwm.sim import KeypointFK
        from dexwm.sim.rig import CONTROL_HZ

        fk = KeypointFK(rig.model, rig.info, rig.camera).float()
        return cls(fk, rig.joint_limits, rig.info.n_arm, dt=1.0 / CONTROL_HZ)

    def spread(self, arm: float, hand: float) -> torch.Tensor:
        """Per-joint search std (J,): `arm` rad for arm joints, `hand` rad for hand joints."""
        std = torch.full((self.n_joints,), float(hand))
        std[: self.n_arm] = float(arm)
        return std

    def clip(self, q: torch.Tensor) -> torch.Tensor:
        """Joint targets (..., J) clipped to the limits."""
        return torch.minimum(torch.maximum(q, self.lower.to(q)), self.upper.to(q))

    def keypoints(self, q: torch.Tensor) -> torch.Tensor:
        """q (..., J) -> commanded right-hand keypoints (..., 21, 3), camera frame, metres."""
        if q.shape[-1] != self.n_joints:
            raise ValueError(f"joint targets must end in {self.n_joints}, got {tuple(q.shape)}")
        lead = q.shape[:-1]
        kp = self.fk(q.reshape(-1, self.n_joints).float())  # (N, 21, 3)
        return kp.reshape(*lead, NUM_KEYPOINTS, 3)

    @staticmethod
    def keypoint_actions(kp: torch.Tensor) -> torch.Tensor:
        """Right-hand keypoints (..., T, 21, 3) -> raw actions (..., T-1, 134): left hand unknown
        (zeros, flag 0), right hand known, static camera."""
        hands = torch.stack([torch.zeros_like(kp), kp], dim=-3)  # (..., T, 2, 21, 3)
        valid = torch.zeros(hands.shape[:-2], dtype=torch.bool, device=kp.device)  # (..., T, 2)
        valid[..., 1] = True
        return keypoint_actions(hands, valid)

    def actions(
        self, q0: torch.Tensor, plan: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Current targets q0 (J,) and candidate plans (B, H, J) -> (raw actions (B, H, 134),
        keypoints (B, H + 1, 21, 3) of q0 then each step, clipped joints (B, H, J))."""
        if plan.ndim != 3:
            raise ValueError(f"plans must be (B, H, J), got {tuple(plan.shape)}")
        B, H, _ = plan.shape
        q = self.clip(plan)  # (B, H, J)
        kp0 = self.keypoints(q0.to(q).reshape(1, -1)).expand(B, 1, NUM_KEYPOINTS, 3)
        kp = torch.cat([kp0, self.keypoints(q)], dim=1)  # (B, H + 1, 21, 3)
        acts = self.keypoint_actions(kp)  # (B, H, 134)
        assert acts.shape == (B, H, ACTION_DIM)
        return acts, kp, q

    def history_actions(self, joints: torch.Tensor) -> torch.Tensor:
        """Commanded targets of the context frames (C, J) -> their actions (1, C-1, 134)."""
        return self.keypoint_actions(self.keypoints(joints.float()))[None]
