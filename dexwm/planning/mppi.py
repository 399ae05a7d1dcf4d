"""MPPI / reward-weighted refinement (TD-MPC2's `_plan`, PDDM).

Like CEM (the loop is `SamplingPlanner.solve`), but the new mean and std are the exponentially
weighted average of the `elites` cheapest candidates, weights exp(-(cost - min cost) /
temperature) (TD-MPC2: 512 samples, 64 elites, 6 iterations, temperature 0.5 on values). With
`normalize`, costs are first divided by the spread of the elites' costs, so the temperature does
not depend on the cost's scale. `smoothing` (PDDM's beta) draws temporally correlated noise along
the horizon: n_t = beta * n_{t-1} + (1 - beta) * eps_t, rescaled back to unit variance.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dexwm.planning.base import SamplingPlanner, positive


@dataclass
class MPPI(SamplingPlanner):
    samples: int = 512
    elites: int = 64  # the weighted average runs over the elites only (TD-MPC2)
    iterations: int = 6
    temperature: float = 0.5
    normalize: bool = True  # costs / spread of the elite costs before the temperature
    smoothing: float = 0.0  # PDDM beta in [0, 1): temporal correlation of the sampled noise

    def check(self) -> None:
        super().check()
        positive("temperature", self.temperature)
        if not 0 <= self.smoothing < 1:
            raise ValueError(f"smoothing must be in [0, 1), got {self.smoothing}")

    def noise(self, eps: torch.Tensor) -> torch.Tensor:
        return smooth_noise(eps, self.smoothing)

    def refit(
        self, elites: torch.Tensor, costs: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        z = costs - costs[0]
        if self.normalize:
            finite = z[torch.isfinite(z)]
            z = z / finite.std(unbiased=False).clamp_min(1e-12) if len(finite) > 1 else z
        w = torch.softmax(-z / self.temperature, dim=0)[:, None, None]  # (elites, 1, 1)
        mean = (w * elites).sum(0)  # (H, A)
        return mean, (w * (elites - mean) ** 2).sum(0).sqrt()


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
