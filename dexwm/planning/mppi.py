"""MPPI / reward-weighted refinement (TD-MPC2's `_plan`, PDDM), a pure batched function.

Like CEM, but the new mean and std are the exponentially weighted average of the `elites`
cheapest candidates, weights exp(-(cost - min cost) / temperature) (TD-MPC2: 512 samples,
64 elites, 6 iterations, temperature 0.5 on values). With `normalize`, costs are first divided
by the spread of the elites' costs, so the temperature does not depend on the cost's scale.
`smoothing` (PDDM's beta) draws temporally correlated noise along the horizon:
n_t = beta * n_{t-1} + (1 - beta) * eps_t, rescaled back to unit variance.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dexwm.planning.base import (
    Cost,
    Planner,
    PlanResult,
    Rollout,
    check_inputs,
    clamp,
    evaluate,
    positive,
)


@dataclass
class MPPI(Planner):
    samples: int = 512
    elites: int = 64  # the weighted average runs over the elites only (TD-MPC2)
    iterations: int = 6
    temperature: float = 0.5
    normalize: bool = True  # costs / spread of the elite costs before the temperature
    smoothing: float = 0.0  # PDDM beta in [0, 1): temporal correlation of the sampled noise
    min_std: float = 0.0
    include_mean: bool = True
    chunk: int = 0

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        positive("samples", self.samples)
        positive("elites", self.elites)
        positive("iterations", self.iterations)
        positive("temperature", self.temperature)
        positive("min_std", self.min_std, allow_zero=True)
        if self.elites > self.samples:
            raise ValueError(f"elites ({self.elites}) > samples ({self.samples})")
        if not 0 <= self.smoothing < 1:
            raise ValueError(f"smoothing must be in [0, 1), got {self.smoothing}")

    @property
    def samples_per_iteration(self) -> int:
        return self.samples


def smooth_noise(eps: torch.Tensor, beta: float) -> torch.Tensor:
    """eps (B, H, A) iid -> temporally filtered noise along H with unit marginal variance."""
    if beta <= 0:
        return eps
    out, n, var = [], torch.zeros_like(eps[:, 0]), 0.0
    for t in range(eps.shape[1]):
        n = beta * n + (1 - beta) * eps[:, t]
        var = beta**2 * var + (1 - beta) ** 2  # variance of n_t
        out.append(n / var**0.5)
    return torch.stack(out, dim=1)  # (B, H, A)


def mppi(
    rollout: Rollout,
    cost: Cost,
    mean: torch.Tensor,
    std: torch.Tensor,
    cfg: MPPI,
    lower: torch.Tensor | None = None,
    upper: torch.Tensor | None = None,
    proposals: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> PlanResult:
    """Minimise cost(rollout(x), x) over sequences x (H, A); see the module docstring."""
    check_inputs(mean, std, proposals)
    fixed = int(cfg.include_mean) + (0 if proposals is None else len(proposals))
    if fixed >= cfg.samples:
        raise ValueError(f"samples ({cfg.samples}) must exceed the mean + proposals ({fixed})")
    searched = std > 0
    floor = cfg.min_std * searched
    mean, std = clamp(mean, lower, upper), std.clone()
    best, best_cost, history, evaluations, it = mean, float("inf"), [], 0, 0
    for _ in range(cfg.iterations):
        it += 1
        mean = clamp(mean, lower, upper)  # an average of clipped candidates may round outside
        parts = [mean[None]] if cfg.include_mean else []
        if proposals is not None:
            parts.append(clamp(proposals.to(mean), lower, upper))
        n = cfg.samples - sum(len(p) for p in parts)
        eps = torch.randn((n, *mean.shape), generator=generator, dtype=mean.dtype).to(mean.device)
        parts.append(clamp(mean + std * smooth_noise(eps, cfg.smoothing), lower, upper))
        x = torch.cat(parts)  # (samples, H, A)
        c = evaluate(rollout, cost, x, cfg.chunk)
        evaluations += len(x)
        c = torch.where(torch.isfinite(c), c, torch.full_like(c, float("inf")))
        ce, order = torch.topk(c, cfg.elites, largest=False)  # (elites,) cheapest first
        elites = x[order]  # (elites, H, A)
        if float(ce[0]) < best_cost:
            best, best_cost = elites[0].clone(), float(ce[0])
        history.append(float(ce.mean()))
        z = ce - ce[0]
        if cfg.normalize:
            finite = z[torch.isfinite(z)]
            z = z / finite.std(unbiased=False).clamp_min(1e-12) if len(finite) > 1 else z
        w = torch.softmax(-z / cfg.temperature, dim=0)  # (elites,)
        mean = (w[:, None, None] * elites).sum(0)  # (H, A)
        std = ((w[:, None, None] * (elites - mean) ** 2).sum(0)).sqrt()
        std = torch.maximum(std, floor)
    mean = clamp(mean, lower, upper).detach()
    return PlanResult(mean, std.detach(), best.detach(), best_cost, history, it, evaluations)


MPPI.function = staticmethod(mppi)
