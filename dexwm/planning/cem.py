"""Cross-entropy method (DexWM's planner; V-JEPA 2's `mpc_utils.cem`).

Each iteration refits mean and std to the `elites` cheapest candidates (the loop is
`SamplingPlanner.solve`). DexWM: 512 samples, 10 elites, 10 iterations, horizon 3. Efficiency
switches (all off by default, so the defaults are DexWM's): `keep_elites` (iCEM), `momentum`,
`stop_std` (stop once the elites agree: their spread fell below this fraction of the initial
spread in every dimension).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dexwm.planning.base import SamplingPlanner, positive


@dataclass
class CEM(SamplingPlanner):
    samples: int = 512
    elites: int = 10
    iterations: int = 10
    momentum: float = 0.0  # new = momentum * old + (1 - momentum) * elite statistics
    keep_elites: int = 0  # best sequences carried into the next iteration (iCEM)
    stop_std: float = 0.0  # early stop when max(std / initial std) < stop_std (0: never)

    def check(self) -> None:
        super().check()
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if not 0 <= self.keep_elites <= self.elites:
            raise ValueError(f"keep_elites must be in [0, elites={self.elites}]")
        positive("stop_std", self.stop_std, allow_zero=True)

    def kept(self) -> int:
        return self.keep_elites

    def refit(
        self, elites: torch.Tensor, costs: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.momentum
        return (
            m * mean + (1 - m) * elites.mean(0),
            m * std + (1 - m) * elites.std(0, unbiased=False),
        )

    def converged(self, std: torch.Tensor, std0: torch.Tensor, searched: torch.Tensor) -> bool:
        return self.stop_std > 0 and bool((std[searched] < self.stop_std * std0[searched]).all())
