"""The rollout callable handed to the planners: candidate joint plans -> predicted features.

    rollout = ModelRollout(wm, space, context, context_joints)
    pred = rollout(plans)        # plans (B, H, J) -> Prediction(feats (B, H, N, D), keypoints, joints)

The context (the last C observed frames' features, shared by all candidates) is handed to the
world model with batch 1, so its keys/values are computed once per call and every rollout step
adds only the new frame's tokens (`Predictor.rollout`); FK, actions and the model run batched
over all candidates at once.

Several devices (DexWM spreads its 512 CEM samples over 8 GPUs): give `replicas`, one copy of the
world model per device. FK and actions stay on the host; the candidates of a call are cut into
near-equal contiguous slices (`split_sizes`), each replica rolls out its slice on its own device
in its own thread (CUDA kernels release the GIL, so the devices run concurrently), and the
predictions are gathered back in the original order.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch

from dexwm.control.joint_space import JointSpace
from dexwm.data.actions import ACTION_DIM
from dexwm.planning.costs import Prediction


def check_model(wm) -> None:
    """The world model must speak the rig's action space (134-d keypoint actions)."""
    dim = int(wm.action_norm.mean.numel())
    if dim != ACTION_DIM:
        raise ValueError(
            f"the checkpoint's action space has {dim} dimensions; the rig's planner produces "
            f"{ACTION_DIM}-d keypoint actions (dexwm.data.actions)"
        )


def split_sizes(n: int, parts: int) -> list[int]:
    """Sizes of near-equal contiguous slices of n candidates over `parts` devices: sizes differ
    by at most one, the larger ones first, and no slice is empty (fewer slices when n < parts)."""
    if n < 0 or parts < 1:
        raise ValueError(f"need n >= 0 and parts >= 1, got n={n}, parts={parts}")
    q, r = divmod(n, parts)
    return [q + (i < r) for i in range(min(parts, n))]


def replicate(wm, devices: list[str]) -> list:
    """One frozen copy of the world model per device (the first device may hold `wm` itself)."""
    import copy

    if not devices:
        raise ValueError("devices must name at least one device")
    out = []
    for dev in devices:
        dev = torch.device(dev)
        same = next(wm.predictor.parameters()).device == dev and not out
        out.append(wm if same else copy.deepcopy(wm).to(dev).eval().requires_grad_(False))
    return out


class ModelRollout:
    """context (C, N, D) features of the last C frames (oldest first), context_joints (C, J)
    the targets commanded at each of them (the last = q_0, where every plan starts).
    replicas: world models on several devices to spread the candidates over (default: [wm])."""

    def __init__(
        self,
        wm,
        space: JointSpace,
        context: torch.Tensor,
        context_joints: torch.Tensor,
        replicas: list | None = None,
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
        self.replicas = list(replicas) if replicas else [wm]
        self._on = {}  # device -> (context, context_actions, context_dt) moved there once

    def _rollout(self, model, acts: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        dev = next(model.predictor.parameters()).device
        if dev not in self._on:
            self._on[dev] = tuple(
                t.to(dev) for t in (self.context, self.context_actions, self.context_dt)
            )
        ctx, ctx_a, ctx_dt = self._on[dev]
        return model.rollout(ctx, ctx_a, ctx_dt, acts.to(dev), dt.to(dev))

    def __call__(self, plans: torch.Tensor) -> Prediction:
        acts, kp, q = self.space.actions(self.q0, plans)  # (B, H, A), (B, H+1, 21, 3), (B, H, J)
        dt = torch.full(acts.shape[:2], self.space.dt)  # (B, H)
        if len(self.replicas) == 1:
            feats = self._rollout(self.replicas[0], acts, dt).to(acts.device)
        else:
            sizes = split_sizes(len(acts), len(self.replicas))
            jobs = zip(self.replicas, acts.split(sizes), dt.split(sizes), strict=False)
            grad = torch.is_grad_enabled()  # grad mode is per thread: carry it over

            def run(job):
                with torch.set_grad_enabled(grad):
                    return self._rollout(*job)

            with ThreadPoolExecutor(len(sizes)) as pool:
                feats = torch.cat([f.to(acts.device) for f in pool.map(run, jobs)])
        return Prediction(feats, kp, q)
