"""Per-dimension normalisation with statistics stored as buffers (saved in checkpoints)."""

from __future__ import annotations

import torch
from torch import nn


class Normalizer(nn.Module):
    """Per-dimension (x - mean) / std with statistics stored as buffers (saved in checkpoints).

    Dimensions that never vary in the fitting data (std below `min_std`) are only centred."""

    def __init__(self, dim: int, min_std: float = 1e-6) -> None:
        super().__init__()
        self.min_std = min_std
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.register_buffer("fitted", torch.tensor(False))

    def set_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        mean, std = (
            torch.as_tensor(mean, dtype=torch.float32),
            torch.as_tensor(std, dtype=torch.float32),
        )
        if mean.shape != self.mean.shape or std.shape != self.std.shape:
            raise ValueError(
                f"stats of shape {tuple(mean.shape)} for a normaliser of dim {self.mean.numel()}"
            )
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all()):
            raise ValueError("normalisation statistics contain NaN/inf")
        self.mean.copy_(mean)
        self.std.copy_(torch.where(std < self.min_std, torch.ones_like(std), std))
        self.fitted.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean
