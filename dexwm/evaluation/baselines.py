"""The methods an evaluation compares, each mapping one batch of clips to predicted future features
(B, H, N, D) in the evaluated model's NORMALISED feature space:

- `model`: the world model rolled out autoregressively with the true future actions;
- `copy_last`: the last context frame, repeated (predicts no change at all);
- `shuffled_actions`: the model with the future actions of ANOTHER clip of the same source (a random
  derangement within the batch; a one-clip batch borrows the previous batch's first clip). The gap
  dt and the context actions stay the clip's own;
- `zero_actions`: the model with zero raw motion: hand and camera deltas 0, the hand-known flags
  kept as they are (a tracked hand that stays still; flags 0 would say "motion unknown" instead);
- any `compare` model (e.g. the ablation trained without the hand loss): rolled out with the true
  actions in its own feature space, then mapped through raw features into the evaluated model's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dexwm.data.actions import HAND_DIMS
from dexwm.models.world_model import WorldModel

BASELINES = ("copy_last", "shuffled_actions", "zero_actions")
MOTION_DIMS = HAND_DIMS + 6  # hand xyz deltas + camera position / Euler deltas (flags follow)

DESCRIPTIONS = {
    "model": "the world model, true actions",
    "copy_last": "last context frame repeated",
    "shuffled_actions": "the model with another clip's future actions",
    "zero_actions": "the model with zero hand/camera motion (hand-known flags kept)",
    "probe_on_truth": "keypoint probe on the TRUE future features (PCK ceiling)",
}


@dataclass
class Batch:
    """One batch of evaluation clips. raw / feats: (B, C+H, N, D) raw and normalised features;
    actions (B, C+H-1, A) raw; dt (B, C+H-1) seconds; `context` = C."""

    raw: torch.Tensor
    feats: torch.Tensor
    actions: torch.Tensor
    dt: torch.Tensor
    context: int

    @property
    def truth(self) -> torch.Tensor:
        return self.feats[:, self.context :]  # (B, H, N, D)

    @property
    def future_actions(self) -> torch.Tensor:
        return self.actions[:, self.context - 1 :]  # (B, H, A)


def to_raw(wm: WorldModel, feats: torch.Tensor) -> torch.Tensor:
    """Normalised features of `wm` -> raw encoder features."""
    return wm.feat_norm.inverse(feats) if wm.feature_norm else feats


def rollout(wm: WorldModel, b: Batch, actions: torch.Tensor | None = None) -> torch.Tensor:
    """Roll `wm` out from b's context with `actions` (B, H, A) raw (default: the true ones)."""
    C = b.context
    future = b.future_actions if actions is None else actions
    with torch.no_grad():
        return wm.rollout(
            b.feats[:, :C], b.actions[:, : C - 1], b.dt[:, : C - 1], future, b.dt[:, C - 1 :]
        )


def copy_last(b: Batch) -> torch.Tensor:
    """(B, H, N, D): the last context frame at every future step."""
    H = b.feats.shape[1] - b.context
    return b.feats[:, b.context - 1 : b.context].expand(-1, H, -1, -1)


def derangement(n: int, generator: torch.Generator) -> torch.Tensor:
    """A random permutation of range(n) without fixed points (Sattolo's single cycle), n >= 2."""
    if n < 2:
        raise ValueError("a derangement needs at least 2 elements")
    perm = list(range(n))
    for i in range(n - 1, 0, -1):
        j = int(torch.randint(i, (1,), generator=generator))
        perm[i], perm[j] = perm[j], perm[i]
    return torch.tensor(perm)


def shuffled_actions(
    actions: torch.Tensor, generator: torch.Generator, donor: torch.Tensor | None = None
) -> torch.Tensor | None:
    """Future actions (B, H, A) -> those of other clips: a derangement for B >= 2; for B = 1 the
    donor's (another clip's (H, A)); None when there is no other clip."""
    if actions.shape[0] >= 2:
        return actions[derangement(actions.shape[0], generator)]
    return None if donor is None else donor[None].to(actions)


def zero_actions(actions: torch.Tensor) -> torch.Tensor:
    """Raw actions (..., A) with all motion set to zero; hand-known flags unchanged."""
    out = actions.clone()
    out[..., :MOTION_DIMS] = 0
    return out


def compare_rollout(wm: WorldModel, other: WorldModel, b: Batch) -> torch.Tensor:
    """`other` rolled out with the true actions from the same raw context, in `wm`'s space."""
    C = b.context
    ctx = other.normalize_feats(b.raw[:, :C])
    with torch.no_grad():
        pred = other.rollout(
            ctx, b.actions[:, : C - 1], b.dt[:, : C - 1], b.future_actions, b.dt[:, C - 1 :]
        )
    return wm.normalize_feats(to_raw(other, pred))
