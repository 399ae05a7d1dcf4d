"""What every planner shares: the one call signature, the problem and result types, the sampling
loop of CEM and MPPI, and warm starts.

A planner optimises a sequence x (H, A) (here: joint targets) given two callables:

    rollout(x (B, H, A)) -> predictions      # e.g. the world model's predicted features
    cost(predictions, x) -> (B,)             # lower is better

and returns a `PlanResult`. Planners evaluate all B candidates of an iteration in ONE call of
`rollout` (optionally in chunks), hold no state between calls, and neither log nor plot: the
closed loop (dexwm.control) keeps the warm start and records timings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

Rollout = Callable[[torch.Tensor], Any]
Cost = Callable[[Any, torch.Tensor], torch.Tensor]


@dataclass
class Problem:
    """One planning call. mean, std (H, A): the initial search distribution (the warm start and
    its spread); lower, upper (broadcastable to (H, A)) bound every candidate (joint limits);
    proposals (P, H, A): extra candidates, e.g. from a learned policy, evaluated every iteration."""

    rollout: Rollout
    cost: Cost
    mean: torch.Tensor
    std: torch.Tensor
    lower: torch.Tensor | None = None
    upper: torch.Tensor | None = None
    proposals: torch.Tensor | None = None
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        m, s, p = self.mean, self.std, self.proposals
        if m.ndim != 2 or m.shape[0] < 1:
            raise ValueError(f"mean must be (H, A) with horizon H >= 1, got {tuple(m.shape)}")
        if s.shape != m.shape:
            raise ValueError(f"std {tuple(s.shape)} must match mean {tuple(m.shape)}")
        if (s < 0).any() or not torch.isfinite(s).all() or not torch.isfinite(m).all():
            raise ValueError("mean/std must be finite and std >= 0")
        if p is not None and p.shape[1:] != m.shape:
            raise ValueError(f"proposals must be (P, *{tuple(m.shape)}), got {tuple(p.shape)}")

    def clamp(self, x: torch.Tensor) -> torch.Tensor:
        return clamp(x, self.lower, self.upper)

    def evaluate(self, x: torch.Tensor, chunk: int = 0) -> torch.Tensor:
        """Costs (B,) of candidates x (B, H, A), non-finite ones set to +inf: one rollout call, or
        calls of `chunk` candidates."""
        if chunk <= 0 or x.shape[0] <= chunk:
            c = self.cost(self.rollout(x), x).reshape(-1)
        else:
            c = torch.cat([self.cost(self.rollout(b), b).reshape(-1) for b in x.split(chunk)])
        return torch.where(torch.isfinite(c), c, torch.full_like(c, float("inf")))


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
    """Base of the planners chosen in config (`class_path: dexwm.planning.CEM`, ...): a dataclass
    of settings whose `solve(problem)` is a pure function of the problem."""

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
        """Minimise cost(rollout(x), x) over sequences x (H, A); see `Problem`."""
        return self.solve(Problem(rollout, cost, mean, std, lower, upper, proposals, generator))

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise ValueError on bad settings (called at construction)."""

    def solve(self, p: Problem) -> PlanResult:
        raise NotImplementedError

    @property
    def budget(self) -> int:
        """Sequences rolled out per call at most."""
        raise NotImplementedError


@dataclass
class SamplingPlanner(Planner):
    """The loop CEM and MPPI share. Each iteration draws `samples` sequences from a diagonal
    Gaussian (plus the current mean, any proposals and carried elites), rolls all of them out in
    one call, keeps the `elites` cheapest, and refits mean and std to them (`refit`: the one
    thing the planners differ in, besides the noise they draw and when they stop)."""

    samples: int = 512  # candidates per iteration, all evaluated in one batched rollout
    elites: int = 10
    iterations: int = 10
    min_std: float = 0.0  # floor on the std of every searched dimension
    include_mean: bool = True  # evaluate the current mean too (the warm start itself competes)
    chunk: int = 0  # > 0: roll out at most this many candidates per call (memory)

    def check(self) -> None:
        positive("samples", self.samples)
        positive("elites", self.elites)
        positive("iterations", self.iterations)
        positive("min_std", self.min_std, allow_zero=True)
        if self.elites > self.samples:
            raise ValueError(f"elites ({self.elites}) > samples ({self.samples})")

    @property
    def budget(self) -> int:
        return self.samples * self.iterations

    # ---- what the planners differ in ----------------------------------------------------------
    def kept(self) -> int:
        """Elites carried into the next iteration."""
        return 0

    def noise(self, eps: torch.Tensor) -> torch.Tensor:
        """iid standard normal (n, H, A) -> the search noise."""
        return eps

    def refit(
        self, elites: torch.Tensor, costs: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Elites (E, H, A) cheapest first, their costs (E,) -> new mean, std (H, A)."""
        raise NotImplementedError

    def converged(self, std: torch.Tensor, std0: torch.Tensor, searched: torch.Tensor) -> bool:
        return False

    # ---- the loop ---------------------------------------------------------------------------
    def solve(self, p: Problem) -> PlanResult:
        fixed = int(self.include_mean) + (0 if p.proposals is None else len(p.proposals))
        if fixed + self.kept() >= self.samples:
            raise ValueError(
                f"samples ({self.samples}) must exceed the mean + proposals + kept elites "
                f"({fixed + self.kept()})"
            )
        std0 = p.std.clone()
        searched = std0 > 0  # dimensions with zero initial spread stay exactly at the mean
        floor = self.min_std * searched
        mean, std = p.clamp(p.mean), p.std.clone()
        best, best_cost, history, carried, evaluations, it = mean, float("inf"), [], None, 0, 0
        for _ in range(self.iterations):
            it += 1
            mean = p.clamp(mean)  # an average of clipped candidates may round outside
            parts = [mean[None]] if self.include_mean else []  # (1, H, A)
            if p.proposals is not None:
                parts.append(p.clamp(p.proposals.to(mean)))
            if carried is not None:
                parts.append(carried)
            n = self.samples - sum(len(x) for x in parts)
            eps = torch.randn((n, *mean.shape), generator=p.generator, dtype=mean.dtype)
            parts.append(p.clamp(mean + std * self.noise(eps.to(mean.device))))  # (n, H, A)
            x = torch.cat(parts)  # (samples, H, A)
            c = p.evaluate(x, self.chunk)  # (samples,)
            evaluations += len(x)
            ce, order = torch.topk(c, self.elites, largest=False)  # (elites,) cheapest first
            elites = x[order]  # (elites, H, A)
            if float(ce[0]) < best_cost:
                best, best_cost = elites[0].clone(), float(ce[0])
            history.append(float(ce.mean()))
            mean, std = self.refit(elites, ce, mean, std)
            std = torch.maximum(std, floor)
            carried = elites[: self.kept()] if self.kept() else None
            if self.converged(std, std0, searched):
                break
        mean = p.clamp(mean).detach()
        return PlanResult(mean, std.detach(), best.detach(), best_cost, history, it, evaluations)


def clamp(x: torch.Tensor, lower: torch.Tensor | None, upper: torch.Tensor | None) -> torch.Tensor:
    """Clip candidates (..., H, A) into [lower, upper] (each broadcastable, or None)."""
    if lower is not None:
        x = torch.maximum(x, lower)
    if upper is not None:
        x = torch.minimum(x, upper)
    return x


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
