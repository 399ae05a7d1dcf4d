"""Hand-consistency head: patch features -> 12 keypoint heatmaps (wrist + 5 fingertips per hand).

A small ViT decoder (DexWM: 6 layers, width 256) over the feature tokens; each token emits its
patch of heatmap pixels, which are put back together at the encoder's input resolution. Targets are
Gaussians at the true keypoints, rendered on the fly in one batched tensor expression.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block as ViTBlock
from torch import nn

from dexwm.keypoints import HEATMAP_POINTS

NUM_HEATMAPS = 2 * len(HEATMAP_POINTS)  # left then right hand


@dataclass
class HandHeadConfig:
    dim: int = 128
    depth: int = 2
    heads: int = 4
    mlp_ratio: float = 4.0
    sigma: float = 2.0  # Gaussian target width in encoder-input pixels (DexWM: 2 px at 224x392)
    scale: float = (
        1.0  # heatmap resolution / encoder-input resolution (DexWM: 1; CPU presets: less)
    )

    def heatmap_size(self, input_size: tuple[int, int]) -> tuple[int, int]:
        return round(input_size[0] * self.scale), round(input_size[1] * self.scale)


class HandHead(nn.Module):
    """features (B, N, Df) on a (gh, gw) token grid -> heatmaps (B, 12, H, W), H, W = out_size."""

    def __init__(
        self, feat_dim: int, grid: tuple[int, int], out_size: tuple[int, int], cfg: HandHeadConfig
    ) -> None:
        super().__init__()
        self.cfg, self.grid, self.out_size = cfg, tuple(grid), tuple(out_size)
        gh, gw = self.grid
        self.patch = (-(-out_size[0] // gh), -(-out_size[1] // gw))  # ceil: crop after unpatchify
        self.embed = nn.Linear(feat_dim, cfg.dim)
        self.pos = nn.Parameter(torch.randn(gh * gw, cfg.dim) * 0.02)
        self.blocks = nn.Sequential(
            *[ViTBlock(cfg.dim, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth)]
        )
        self.norm = nn.LayerNorm(cfg.dim)
        self.out = nn.Linear(cfg.dim, NUM_HEATMAPS * self.patch[0] * self.patch[1])
        nn.init.zeros_(self.out.weight)  # start from empty heatmaps: a small, stable first loss
        nn.init.zeros_(self.out.bias)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        B = feats.shape[0]
        (gh, gw), (ph, pw) = self.grid, self.patch
        x = self.norm(self.blocks(self.embed(feats) + self.pos))  # (B, N, dim)
        x = self.out(x).view(B, gh, gw, NUM_HEATMAPS, ph, pw)
        x = x.permute(0, 3, 1, 4, 2, 5).reshape(B, NUM_HEATMAPS, gh * ph, gw * pw)  # (B, K, H', W')
        return x[..., : self.out_size[0], : self.out_size[1]]


def heatmap_targets(
    hands_uv: torch.Tensor, visible: torch.Tensor, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """hands_uv (..., 2, 21, 2) in heatmap pixels; visible: per keypoint (..., 2, 21) (a clip's
    `keypoints_visible`: valid hand and point inside the stored frame) or per hand (..., 2) -> the
    12 head points uv (..., 12, 2) and their visibility (..., 12): visible and inside the heatmap."""
    idx = torch.tensor(HEATMAP_POINTS, device=hands_uv.device)
    uv = hands_uv.index_select(-2, idx).flatten(-3, -2)  # (..., 12, 2)
    if visible.shape == hands_uv.shape[:-1]:  # per keypoint
        vis = visible.index_select(-1, idx).flatten(-2)
    else:  # per hand
        vis = visible[..., :, None].expand(*visible.shape, len(HEATMAP_POINTS)).flatten(-2)
    H, W = size
    inside = (uv[..., 0] >= 0) & (uv[..., 0] < W) & (uv[..., 1] >= 0) & (uv[..., 1] < H)
    return uv, vis & inside & torch.isfinite(uv).all(-1)


def render_heatmaps(uv: torch.Tensor, size: tuple[int, int], sigma: float) -> torch.Tensor:
    """Gaussians (peak 1) at uv (..., K, 2) -> (..., K, H, W); pixel (row i, col j) is sampled at its
    centre (j + 0.5, i + 0.5), the schema's continuous pixel convention."""
    H, W = size
    ys = torch.arange(H, device=uv.device, dtype=uv.dtype) + 0.5
    xs = torch.arange(W, device=uv.device, dtype=uv.dtype) + 0.5
    gx = torch.exp(-((xs - uv[..., 0:1]) ** 2) / (2 * sigma**2))  # (..., K, W)
    gy = torch.exp(-((ys - uv[..., 1:2]) ** 2) / (2 * sigma**2))  # (..., K, H)
    return gy[..., :, None] * gx[..., None, :]  # separable: (..., K, H, W)


def hand_heatmap_loss(
    pred: torch.Tensor, uv: torch.Tensor, visible: torch.Tensor, sigma: float
) -> torch.Tensor:
    """Visibility-masked heatmap MSE. pred (B, K, H, W); uv (B, K, 2); visible (B, K).
    Mean over visible heatmaps only; exactly 0 (with a graph) when nothing is visible."""
    target = render_heatmaps(uv.nan_to_num(0.0), tuple(pred.shape[-2:]), sigma)
    per_map = F.mse_loss(pred, target, reduction="none").mean(dim=(-1, -2))  # (B, K)
    w = visible.to(pred.dtype)
    return (per_map * w).sum() / w.sum().clamp(min=1.0)


def heatmap_argmax(heatmaps: torch.Tensor) -> torch.Tensor:
    """(..., K, H, W) -> peak positions (..., K, 2) in pixels (u, v)."""
    H, W = heatmaps.shape[-2:]
    flat = heatmaps.flatten(-2).argmax(-1)
    return torch.stack([flat % W, flat // W], -1).to(heatmaps.dtype) + 0.5


def soft_argmax(heatmaps: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """Differentiable peak: softmax-weighted mean pixel (..., K, 2) of heatmaps (..., K, H, W)."""
    H, W = heatmaps.shape[-2:]
    p = (heatmaps.flatten(-2) / temperature).softmax(-1).unflatten(-1, (H, W))  # (..., K, H, W)
    xs = torch.arange(W, device=p.device, dtype=p.dtype) + 0.5
    ys = torch.arange(H, device=p.device, dtype=p.dtype) + 0.5
    return torch.stack([(p.sum(-2) * xs).sum(-1), (p.sum(-1) * ys).sum(-1)], -1)
