"""Cross-entropy method (DexWM's planner; V-JEPA 2's `mpc_utils.cem`), a pure batched function.

Each iteration draws `samples` sequences from a diagonal Gaussian (plus the current mean, carried
elites and any proposals, e.g. from a learned policy), rolls all of them out in one call, and refits
mean and std to the `elites` cheapest. DexWM: 512 samples, 10 elites, 10 iterations, horizon 3.
Efficiency switches (all off by default, so the defaults are DexWM's): `keep_elites` (iCEM),
`momentum`, `stop_std` (stop once the elites agree: their spread fell below this fraction of the
initial spread in every dimension).
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
class CEM(Planner):
    samples: int = 512  # candidates per iteration, all evaluated in one batched rollout
    elites: int = 10
    iterations: int = 10
    min_std: float = 0.0  # floor on the std of every searched dimension
    momentum: float = 0.0  # new = momentum * old + (1 - momentum) * elite statistics
    keep_elites: int = 0  # best sequences carried into the next iteration (iCEM)
    include_mean: bool = True  # evaluate the current mean too (the warm start itself competes)
    stop_std: float = 0.0  # early stop when max(std / initial std) < stop_std (0: never)
    chunk: int = 0  # > 0: roll out at most this many candidates per call (memory)

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        positive("samples", self.samples)
        positive("elites", self.elites)
        positive("iterations", self.iterations)
        if self.elites > self.samples:
            raise ValueError(f"elites ({self.elites}) > samples ({self.samples})")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if not 0 <= self.keep_elites <= self.elites:
            raise ValueError(f"keep_elites must be in [0, elites={self.elites}]")
        positive("min_std", self.min_std, allow_zero=True)
        positive("stop_std", self.stop_std, allow_zero=True)

    @property
    def samples_per_iteration(self) -> int:
        return self.samples


def cem(
    rollout: Rollout,
    cost: Cost,
    mean: torch.Tensor,
    std: torch.Tensor,
    cfg: CEM,
    lower: torch.Tensor | None = None,
    upper: torch.Tensor | None = None,
    proposals: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> PlanResult:
    """Minimise cost(rollout(x), x) over sequences x (H, A); see the module docstring."""
    check_inputs(mean, std, proposals)
    fixed = int(cfg.include_mean) + (0 if proposals is None else len(proposals)) + cfg.keep_elites
    if fixed >= cfg.samples:
        raise ValueError(
            f"samples ({cfg.samples}) must exceed the mean + proposals + kept elites ({fixed})"
        )
    std0 = std.clone()
    searched = std0 > 0  # dimensions with zero initial spread stay exactly at the mean
    floor = cfg.min_std * searched
    mean, std = clamp(mean, lower, upper), std.clone()
    best, best_cost, history, carried, evaluations, it = mean, float("inf"), [], None, 0, 0
    for _ in range(cfg.iterations):
        it += 1
        mean = clamp(mean, lower, upper)  # an average of clipped candidates may round outside
        parts = [mean[None]] if cfg.include_mean else []  # (1, H, A)
        if proposals is not None:
            parts.append(clamp(proposals.to(mean), lower, upper))
        if carried is not None:
            parts.append(carried)
        n = cfg.samples - sum(len(p) for p in parts)
        eps = torch.randn((n, *mean.shape), generator=generator, dtype=mean.dtype)
        parts.append(clamp(mean + std * eps.to(mean.device), lower, upper))  # (n, H, A)
        x = torch.cat(parts)  # (samples, H, A)
        c = evaluate(rollout, cost, x, cfg.chunk)  # (samples,)
        evaluations += len(x)
        c = torch.where(torch.isfinite(c), c, torch.full_like(c, float("inf")))
        order = torch.topk(c, cfg.elites, largest=False).indices  # cheapest first
        elites = x[order]  # (elites, H, A)
        if float(c[order[0]]) < best_cost:
            best, best_cost = elites[0].clone(), float(c[order[0]])
        history.append(float(c[order].mean()))
        m = cfg.momentum
        mean = m * mean + (1 - m) * elites.mean(0)
        std = m * std + (1 - m) * elites.std(0, unbiased=False)
        std = torch.maximum(std, floor)
        carried = elites[: cfg.keep_elites] if cfg.keep_elites else None
        if cfg.stop_std > 0 and bool((std[searched] < cfg.stop_std * std0[searched]).all()):
            break
    mean = clamp(mean, lower, upper).detach()
    return PlanResult(mean, std.detach(), best.detach(), best_cost, history, it, evaluations)


CEM.function = staticmethod(cem)
