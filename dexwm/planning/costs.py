"""Planning costs, composable in config (DexWM, DESIGN.md s.2):

- `FeatureCost`: distance of the predicted features to the goal image's features at every step,
  weighted decay^(H-1-t) (DexWM: MSE, decay 0.6); "mse" or "l1".
- `KeypointCost`: squared pixel error between the right hand's wrist + fingertips of the plan and
  those the hand head finds in the goal image (DexWM weight 1e-3). The plan's points come from
  the hand head on the PREDICTED features (DexWM) or, exactly, from FK of the planned joints.
- `PoseCost`: mean distance (metres) of the plan's wrist + fingertips (FK of the planned joints)
  to the goal hand's, which a goal-pose head estimates from the goal image
  (`dexwm.control.goal_pose`): 3D and exact on the plan's side, so it ranks plans a few
  centimetres apart that the feature grid cannot tell apart.
- `OrientationCost`: 1 - cos(angle) between the planned hand frame and the goal's (DexWM: 0.4,
  grasp only). The goal frame comes from the goal state's joints (privileged, as in DexWM).

Each term maps (Prediction, Goal) -> cost (B,); `Objective` sums weight x term for the terms
that apply to the task. Pixel errors are measured in encoder-input pixels, so one weight fits
every preset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from dexwm.keypoints import FINGERTIPS, WRIST

HEAD_POINTS = (WRIST, *FINGERTIPS)


@dataclass
class Prediction:
    """What a batched rollout of B candidate plans produced."""

    feats: torch.Tensor  # (B, H, N, D) predicted normalised features
    keypoints: torch.Tensor  # (B, H + 1, 21, 3) commanded keypoints (camera frame) of q_0..q_H
    joints: torch.Tensor  # (B, H, J) clipped joint targets
    distance: torch.Tensor | None = None  # (B, H) true task distance (perfect model only)


@dataclass
class Goal:
    """The goal of one episode, computed once before planning."""

    feats: torch.Tensor  # (N, D) normalised features of the goal image
    uv: torch.Tensor | None = None  # (6, 2) right wrist + tips in encoder-input pixels (head)
    points: torch.Tensor | None = None  # (21, 3) goal hand keypoints, camera frame (pose head)
    frame: torch.Tensor | None = None  # (3, 3) goal hand frame, camera axes
    task: str | None = None
    current: torch.Tensor | None = None  # (N, D) features of the latest observed frame
    # predicted features (B, H, N, D), temperature -> right wrist + tips (B, H, 6, 2) in
    # encoder-input pixels, from the world model's hand head (given by the closed loop)
    hand_uv: Callable[[torch.Tensor, float], torch.Tensor] | None = None
    to_input_uv: Callable[[torch.Tensor], torch.Tensor] | None = None  # cam points -> input px


def step_weights(H: int, decay: float, like: torch.Tensor | None = None) -> torch.Tensor:
    """(H,) weights decay^(H-1-t): the last step counts most."""
    t = torch.arange(H, dtype=torch.float32)
    w = decay ** (H - 1 - t)
    return w if like is None else w.to(like)


def feature_distance(pred: torch.Tensor, goal: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """pred (B, H, N, D), goal (N, D) -> (B, H) mean squared or absolute difference per step."""
    diff = pred - goal
    return (diff.square() if kind == "mse" else diff.abs()).mean(dim=(-1, -2))


def hand_frame(kp: torch.Tensor) -> torch.Tensor:
    """Keypoints (..., 21, 3) -> an orthonormal hand frame (..., 3, 3), columns (x, y, z):
    x wrist -> middle base, z the palm normal from the index and ring bases."""
    wrist, index, middle, ring = kp[..., 0, :], kp[..., 5, :], kp[..., 9, :], kp[..., 13, :]
    x = torch.nn.functional.normalize(middle - wrist, dim=-1)
    z = torch.nn.functional.normalize(torch.cross(x, index - ring, dim=-1), dim=-1)
    y = torch.cross(z, x, dim=-1)
    return torch.stack([x, y, z], dim=-1)


class CostTerm:
    """A weighted cost term; `tasks` limits it to some tasks (None: all)."""

    name = "term"

    def __init__(self, weight: float = 1.0, tasks: list[str] | None = None) -> None:
        if weight < 0:
            raise ValueError(f"{type(self).__name__}: weight must be >= 0, got {weight}")
        self.weight, self.tasks = float(weight), None if tasks is None else list(tasks)

    def applies(self, task: str | None) -> bool:
        return self.weight > 0 and (self.tasks is None or task is None or task in self.tasks)

    def __call__(self, pred: Prediction, goal: Goal) -> torch.Tensor:
        raise NotImplementedError


class FeatureCost(CostTerm):
    """Distance of the predicted features to the goal image's at every step, weighted
    decay^(H-1-t) (DexWM: MSE, decay 0.6). `change` > 0 weights the tokens by how much the goal
    differs from the current frame there, w = (1 - change) + change * d / mean(d) with d the
    per-token squared difference: the region the task is about (the object, the hand) counts
    more than the arm the whole image is dominated by. Computed from the goal image and the
    current frame only."""

    name = "feature"

    def __init__(
        self, weight: float = 1.0, kind: str = "mse", decay: float = 0.6, change: float = 0.0,
        tasks=None,
    ):  # fmt: skip
        super().__init__(weight, tasks)
        if kind not in ("mse", "l1"):
            raise ValueError(f"FeatureCost kind must be 'mse' or 'l1', got {kind!r}")
        if not 0 < decay <= 1:
            raise ValueError(f"decay must be in (0, 1], got {decay}")
        if not 0 <= change <= 1:
            raise ValueError(f"change must be in [0, 1], got {change}")
        self.kind, self.decay, self.change = kind, decay, change
        if change > 0:
            self.name = f"feature_change{change:g}"

    def token_weights(self, goal: Goal) -> torch.Tensor | None:
        """(N,) weights of the tokens, or None (uniform)."""
        if self.change == 0:
            return None
        if goal.current is None:
            raise ValueError("FeatureCost(change > 0) needs the current frame's features")
        d = (goal.feats - goal.current).square().mean(-1)  # (N,)
        return (1 - self.change) + self.change * d / d.mean().clamp_min(1e-12)

    def __call__(self, pred: Prediction, goal: Goal) -> torch.Tensor:
        w = self.token_weights(goal)
        if w is None:
            d = feature_distance(pred.feats, goal.feats, self.kind)  # (B, H)
        else:
            diff = pred.feats - goal.feats  # (B, H, N, D)
            per_token = (diff.square() if self.kind == "mse" else diff.abs()).mean(-1)
            d = (per_token * w.to(per_token)).mean(-1)  # (B, H)
        return d @ step_weights(d.shape[1], self.decay, d)


class KeypointCost(CostTerm):
    name = "keypoint"

    def __init__(
        self,
        weight: float = 1e-3,
        source: str = "predicted",
        decay: float = 0.6,
        temperature: float = 0.05,
        tasks=None,
    ):
        super().__init__(weight, tasks)
        if source not in ("predicted", "fk"):
            raise ValueError(f"KeypointCost source must be 'predicted' or 'fk', got {source!r}")
        self.source, self.decay, self.temperature = source, decay, temperature

    def __call__(self, pred: Prediction, goal: Goal) -> torch.Tensor:
        if goal.uv is None:
            raise ValueError("KeypointCost needs the goal's hand points (a model with a hand head)")
        if self.source == "predicted":
            if goal.hand_uv is None:
                raise ValueError("KeypointCost(source='predicted') needs the model's hand head")
            uv = goal.hand_uv(pred.feats, self.temperature)  # (B, H, 6, 2)
        else:
            pts = pred.keypoints[:, 1:, list(HEAD_POINTS)]  # (B, H, 6, 3)
            uv = goal.to_input_uv(pts)
        err = (uv - goal.uv).square().sum(-1).mean(-1)  # (B, H) mean squared pixel distance
        return err @ step_weights(err.shape[1], self.decay, err)


class PoseCost(CostTerm):
    """Mean distance (m) of the plan's right wrist + fingertips (FK of the planned joints) to the
    goal hand's, step-weighted decay^(H-1-t). The goal points come from the goal image through a
    goal-pose head (`MPCPolicy(goal_pose=...)`), never from the simulator's state."""

    name = "pose"

    def __init__(self, weight: float = 1.0, decay: float = 0.6, tasks=("reach",)):
        super().__init__(weight, None if tasks is None else list(tasks))
        if not 0 < decay <= 1:
            raise ValueError(f"decay must be in (0, 1], got {decay}")
        self.decay = decay

    def __call__(self, pred: Prediction, goal: Goal) -> torch.Tensor:
        if goal.points is None:
            raise ValueError("PoseCost needs the goal hand's points (MPCPolicy(goal_pose=...))")
        idx = list(HEAD_POINTS)
        plan = pred.keypoints[:, 1:, idx]  # (B, H, 6, 3)
        err = (plan - goal.points[idx].to(plan)).norm(dim=-1).mean(-1)  # (B, H)
        return err @ step_weights(err.shape[1], self.decay, err)


class OrientationCost(CostTerm):
    name = "orientation"

    def __init__(self, weight: float = 0.4, decay: float = 0.6, tasks=("grasp",)):
        super().__init__(weight, None if tasks is None else list(tasks))
        self.decay = decay

    def __call__(self, pred: Prediction, goal: Goal) -> torch.Tensor:
        if goal.frame is None:
            raise ValueError("OrientationCost needs the goal hand frame")
        R = hand_frame(pred.keypoints[:, 1:])  # (B, H, 3, 3)
        cos = ((R * goal.frame).sum(dim=(-1, -2)) - 1) / 2  # trace(R^T R_goal) -> cos(angle)
        err = 1 - cos  # (B, H)
        return err @ step_weights(err.shape[1], self.decay, err)


class TrueDistanceCost(CostTerm):
    """PRIVILEGED DIAGNOSTIC, not a planning cost: the task's true distance after each step, as
    only the simulator (the perfect model) knows it. It tells how far a cost that sees the right
    thing would get with the same planner and budget."""

    name = "true_distance"

    def __init__(self, weight: float = 1.0, decay: float = 0.6, tasks=None):
        super().__init__(weight, tasks)
        self.decay = decay

    def __call__(self, pred: Prediction, goal: Goal) -> torch.Tensor:
        if pred.distance is None:
            raise ValueError("TrueDistanceCost needs the simulator as the model (model: simulator)")
        d = pred.distance.to(torch.float32)  # (B, H)
        return d @ step_weights(d.shape[1], self.decay, d)


class Objective:
    """Weighted sum of the terms that apply to the goal's task: (Prediction, plan) -> (B,)."""

    def __init__(self, terms: list[CostTerm], goal: Goal) -> None:
        self.goal = goal
        self.terms = [t for t in terms if t.applies(goal.task)]
        if not self.terms:
            raise ValueError(f"no cost term applies to task {goal.task!r}")

    def parts(self, pred: Prediction) -> dict[str, torch.Tensor]:
        """Each applying term's weighted cost (B,), by name."""
        return {t.name: t.weight * t(pred, self.goal) for t in self.terms}

    def __call__(self, pred: Prediction, plan: torch.Tensor | None = None) -> torch.Tensor:
        return sum(self.parts(pred).values())
