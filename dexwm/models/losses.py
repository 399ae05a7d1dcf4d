"""Training losses, each its own small function; the Lightning module weights and sums them."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dexwm.models.hand_head import hand_heatmap_loss, heatmap_targets


def feature_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Predicted vs true features (..., N, D): 'mse' (DexWM) or 'l1' (V-JEPA 2-AC)."""
    if kind == "mse":
        return F.mse_loss(pred, target)
    if kind == "l1":
        return F.l1_loss(pred, target)
    raise ValueError(f"feature loss {kind!r}: use 'mse' or 'l1'")


def hand_loss(
    heatmaps: torch.Tensor, hands_uv: torch.Tensor, visible: torch.Tensor, sigma: float
) -> torch.Tensor:
    """heatmaps (B, T, 12, H, W) predicted from PREDICTED features; hands_uv (B, T, 2, 21, 2) in
    heatmap pixels; visible (B, T, 2, 21) per keypoint (a clip's keypoints_visible) or (B, T, 2)
    per hand. Keypoints not visible, or outside the heatmap, contribute nothing."""
    uv, vis = heatmap_targets(hands_uv, visible, tuple(heatmaps.shape[-2:]))  # (B,T,12,2)
    return hand_heatmap_loss(heatmaps.flatten(0, 1), uv.flatten(0, 1), vis.flatten(0, 1), sigma)
