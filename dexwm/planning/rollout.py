"""The rollout callable handed to the planners: candidate joint plans -> predicted features.

    rollout = ModelRollout(wm, space, context, context_joints)
    pred = rollout(plans)        # plans (B, H, J) -> Prediction(feats (B, H, N, D), keypoints, joints)

The context (the last C observed frames' features, shared by all candidates) is handed to the
world model with batch 1, so its keys/values are computed once per call and every rollout step
adds only the new frame's tokens (`Predictor.rollout`); FK, actions and the model run batched
over all candidates at once.
"""

from __future__ import annotations

import torch

from dexwm.actions import ACTION_DIM
from dexwm.planning.actions import JointSpace
from dexwm.planning.costs import Prediction


def check_model(wm) -> None:
    """The world model must speak the rig's action space (134-d keypoint actions)."""
    dim = int(wm.action_norm.mean.numel())
    if dim != ACTION_DIM:
        raise ValueError(
            f"the checkpoint's action space has {dim} dimensions; the rig's planner produces "
            f"{ACTION_DIM}-d keypoint actions (dexwm.actions)"
        )


class ModelRollout:
    """context (C, N, D) features of the last C frames (oldest first), context_joints (C, J)
    the targets commanded at each of them (the last = q_0, where every plan starts)."""

    def __init__(
        self, wm, space: JointSpace, context: torch.Tensor, context_joints: torch.Tensor
    ) -> None:
        if context.ndim != 3 or context_joints.ndim != 2 or len(context) != len(context_joints):
            raise ValueError(
                f"context (C, N, D) and context_joints (C, J) must match, got "
                f"{tuple(context.shape)} and {tuple(context_joints.shape)}"
            )
        self.wm, self.space = wm, space
        self.context = context[None]  # (1, C, N, D): shared by every candidate
        self.q0 = context_joints[-1].float()
        C = len(context)
        self.context_actions = space.history_actions(context_joints)  # (1, C-1, A)
        self.context_dt = torch.full((1, C - 1), space.dt)

    def __call__(self, plans: torch.Tensor) -> Prediction:
        acts, kp, q = self.space.actions(self.q0, plans)  # (B, H, A), (B, H+1, 21, 3), (B, H, J)
        dt = torch.full(acts.shape[:2], self.space.dt)  # (B, H)
        feats = self.wm.rollout(self.context, self.context_actions, self.context_dt, acts, dt)
        return Prediction(feats, kp, q)
