"""What every planner shares: the call signature, the result, sampling helpers, warm starts.

A planner optimises a sequence x (H, A) (here: joint targets) given two callables:

    rollout(x (B, H, A)) -> predictions      # e.g. the world model's predicted features
    cost(predictions, x) -> (B,)             # lower is better

and returns a `PlanResult`. Planners evaluate all B candidates of an iteration in ONE call of
`rollout` (optionally in chunks), hold no state between calls, and neither log nor plot: the MPC
loop keeps the warm start and records timings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

Rollout = Callable[[torch.Tensor], Any]
Cost = Callable[[Any, torch.Tensor], torch.Tensor]


@dataclass
class PlanResult:
    mean: torch.Tensor  # (H, A) the plan: final mean of the search distribution
    std: torch.Tensor  # (H, A) final spread (zeros for the gradient planner)
    best: torch.Tensor  # (H, A) lowest-cost sequence evaluated
    best_cost: float
    costs: list[float] = field(default_factory=list)  # per iteration: mean cost of the elites
    iterations: int = 0  # iterations run (early stopping may end before the budget)
    evaluations: int = 0  # sequences rolled out in total


class Planner:
    """Base of the planners chosen in config (`class_path: dexwm.planning.CEM`, ...).

    `__call__(rollout, cost, mean, std, lower, upper, proposals, generator)`: mean, std (H, A)
    describe the initial search distribution (the warm start and its spread); lower, upper
    (broadcastable to (H, A)) bound every candidate (joint limits); proposals (P, H, A) are extra
    candidates, e.g. from a learned policy, evaluated in every iteration."""

    samples_per_iteration: int = 1
    iterations: int = 1

    def check(self) -> None:  # pragma: no cover - overridden
        pass

    # the planner's pure function f(rollout, cost, mean, std, cfg, lower, upper, proposals,
    # generator), set below each planner's class (e.g. `CEM.function = staticmethod(cem)`)
    function: ClassVar[Callable[..., PlanResult]]

    def __call__(
        self,
        rollout: Rollout,
        cost: Cost,
        mean: torch.Tensor,
        std: torch.Tensor,
        lower: torch.Tensor | None = None,
        upper: torch.Tensor | None = None,
        proposals: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> PlanResult:
        return self.function(rollout, cost, mean, std, self, lower, upper, proposals, generator)

    @property
    def budget(self) -> int:
        """Sequences rolled out per call at most (samples x iterations)."""
        return self.samples_per_iteration * self.iterations


def clamp(x: torch.Tensor, lower: torch.Tensor | None, upper: torch.Tensor | None) -> torch.Tensor:
    """Clip candidates (..., H, A) into [lower, upper] (each broadcastable, or None)."""
    if lower is not None:
        x = torch.maximum(x, lower)
    if upper is not None:
        x = torch.minimum(x, upper)
    return x


def evaluate(rollout: Rollout, cost: Cost, x: torch.Tensor, chunk: int = 0) -> torch.Tensor:
    """Costs (B,) of candidates x (B, H, A): one rollout call, or calls of `chunk` candidates."""
    if chunk <= 0 or x.shape[0] <= chunk:
        return cost(rollout(x), x).reshape(-1)
    return torch.cat([cost(rollout(c), c).reshape(-1) for c in x.split(chunk)])


def check_inputs(mean: torch.Tensor, std: torch.Tensor, proposals: torch.Tensor | None) -> None:
    if mean.ndim != 2 or mean.shape[0] < 1:
        raise ValueError(f"mean must be (H, A) with horizon H >= 1, got {tuple(mean.shape)}")
    if std.shape != mean.shape:
        raise ValueError(f"std {tuple(std.shape)} must match mean {tuple(mean.shape)}")
    if (std < 0).any() or not torch.isfinite(std).all() or not torch.isfinite(mean).all():
        raise ValueError("mean/std must be finite and std >= 0")
    if proposals is not None and proposals.shape[1:] != mean.shape:
        raise ValueError(
            f"proposals must be (P, *{tuple(mean.shape)}), got {tuple(proposals.shape)}"
        )


def positive(name: str, value: float, allow_zero: bool = False) -> None:
    if not (value >= 0 if allow_zero else value > 0):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def shift_plan(plan: torch.Tensor, steps: int, fill: torch.Tensor | None = None) -> torch.Tensor:
    """Warm start: drop the `steps` executed actions of plan (H, A) and pad the end, with `fill`
    (A,) if given, else with copies of the plan's last action. steps >= H: all padding."""
    H = plan.shape[0]
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    pad = plan[-1] if fill is None else fill.to(plan)
    kept = plan[min(steps, H) :]  # (H - steps, A)
    return torch.cat([kept, pad.expand(H - kept.shape[0], -1)], dim=0)
