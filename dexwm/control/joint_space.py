"""Joint space -> the world model's actions, batched (DexWM's planner action space, DESIGN.md s.2).

A plan is a sequence of commanded joint targets q_1..q_H (H, J) following the current targets q_0.
All candidates of a planning iteration at once:

    q (B, H + 1, J) -> batched FK (dexwm.sim.KeypointFK) -> right-hand keypoints (B, H + 1, 21, 3)
    in the camera frame -> `dexwm.data.actions.keypoint_actions` (left hand unknown, static camera)
    -> raw actions (B, H, 134); the world model normalises them.

Candidates are clipped to the joint limits before FK, so what the model sees is what the rig
would be commanded (the rig clips the same way). An optional per-step limit `max_step` (rad per
joint and control step) keeps plans inside the motion range of the training data: a small model
extrapolates badly beyond it, and a planner exploits exactly those errors.
"""

from __future__ import annotations

import numpy as np
import torch

from dexwm.data.actions import ACTION_DIM, keypoint_actions
from dexwm.keypoints import NUM_KEYPOINTS


class JointSpace:
    """Commanded joint targets of one rig -> hand keypoints and raw model actions.

    fk: q (N, J) -> (N, 21, 3) camera-frame keypoints (e.g. `KeypointFK`); limits (J, 2);
    n_arm: leading arm joints (the rest are hand joints); dt: seconds per control step;
    max_step (J,): largest change of each joint target per step, or None."""

    def __init__(
        self,
        fk: torch.nn.Module,
        limits: np.ndarray,
        n_arm: int,
        dt: float = 0.1,
        max_step: torch.Tensor | None = None,
    ):
        limits = torch.as_tensor(np.asarray(limits), dtype=torch.float32)
        if limits.ndim != 2 or limits.shape[1] != 2:
            raise ValueError(f"limits must be (J, 2), got {tuple(limits.shape)}")
        self.fk = fk
        self.lower, self.upper = limits[:, 0].contiguous(), limits[:, 1].contiguous()
        self.n_joints, self.n_arm, self.dt = limits.shape[0], int(n_arm), float(dt)
        if max_step is not None:
            max_step = torch.as_tensor(max_step, dtype=torch.float32).expand(self.n_joints)
            if (max_step <= 0).any():
                raise ValueError("max_step must be > 0")
        self.max_step = max_step

    @classmethod
    def from_rig(cls, rig, max_step: torch.Tensor | None = None) -> JointSpace:
        from dexwm.sim import KeypointFK
        from dexwm.sim.rig import CONTROL_HZ

        fk = KeypointFK(rig.model, rig.info, rig.camera).float()
        return cls(fk, rig.joint_limits, rig.info.n_arm, 1.0 / CONTROL_HZ, max_step)

    def spread(self, arm: float, hand: float) -> torch.Tensor:
        """Per-joint value (J,): `arm` for arm joints, `hand` for hand joints (e.g. search std)."""
        std = torch.full((self.n_joints,), float(hand))
        std[: self.n_arm] = float(arm)
        return std

    def clip(self, q: torch.Tensor) -> torch.Tensor:
        """Joint targets (..., J) clipped to the limits."""
        return torch.minimum(torch.maximum(q, self.lower.to(q)), self.upper.to(q))

    def limit(self, q0: torch.Tensor, plan: torch.Tensor) -> torch.Tensor:
        """Plans (..., H, J) from targets q0 (J,) -> clipped to the joint limits and, with max_step,
        each step within max_step of the previous one (differentiable)."""
        q = self.clip(plan)
        if self.max_step is None:
            return q
        m, prev, out = self.max_step.to(q), q0.to(q), []
        for t in range(q.shape[-2]):
            prev = prev + torch.maximum(torch.minimum(q[..., t, :] - prev, m), -m)
            out.append(prev)
        return torch.stack(out, dim=-2)

    def bounds(self, q0: torch.Tensor, H: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Box (H, J) x 2 for the planner's candidates: the joint limits, intersected with
        q0 +- (t + 1) max_step (the reachable set of step t)."""
        lo, hi = self.lower.expand(H, -1), self.upper.expand(H, -1)
        if self.max_step is None:
            return lo, hi
        reach = self.max_step * torch.arange(1, H + 1, dtype=torch.float32)[:, None]  # (H, J)
        return torch.maximum(lo, q0 - reach), torch.minimum(hi, q0 + reach)

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
        keypoints (B, H + 1, 21, 3) of q0 then each step, limited joints (B, H, J))."""
        if plan.ndim != 3:
            raise ValueError(f"plans must be (B, H, J), got {tuple(plan.shape)}")
        B, H, _ = plan.shape
        q = self.limit(q0, plan)  # (B, H, J)
        kp0 = self.keypoints(q0.to(q).reshape(1, -1)).expand(B, 1, NUM_KEYPOINTS, 3)
        kp = torch.cat([kp0, self.keypoints(q)], dim=1)  # (B, H + 1, 21, 3)
        acts = self.keypoint_actions(kp)  # (B, H, 134)
        assert acts.shape == (B, H, ACTION_DIM)
        return acts, kp, q

    def history_actions(self, joints: torch.Tensor) -> torch.Tensor:
        """Commanded targets of the context frames (C, J) -> their actions (1, C-1, 134)."""
        return self.keypoint_actions(self.keypoints(joints.float()))[None]
