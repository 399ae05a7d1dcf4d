"""Prediction metrics of the DexWM protocol on batched tensors, and their aggregation.

Per clip and horizon step:
- `feat_mae`: mean absolute error of predicted vs true features over tokens and channels (what
  DexWM's code reports as "L2"), `feat_mse`: mean squared error, `cosine`: cosine similarity of
  predicted and true token vectors, averaged over tokens;
- PCK: the fraction of keypoints VISIBLE IN THE TRUTH whose predicted position lies within a
  threshold; invisible keypoints count in neither numerator nor denominator.

`Accumulator` sums them per (group, method): feature metrics as a mean over clips (each clip weighs
the same), PCK as total hits / total visible keypoints (each visible keypoint weighs the same).
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch
import torch.nn.functional as F

FEATURE_METRICS = ("feat_mae", "feat_mse", "cosine")
DEXWM_PCK_PX = (2.5, 5.0, 10.0, 20.0)
DEXWM_FRAME = (224, 392)  # height, width of the frames DexWM's PCK thresholds refer to


def feature_errors(pred: torch.Tensor, true: torch.Tensor) -> dict[str, torch.Tensor]:
    """pred, true (B, H, N, D) -> {feat_mae, feat_mse, cosine}: each (B, H)."""
    diff = pred.float() - true.float()  # (B, H, N, D)
    return {
        "feat_mae": diff.abs().mean(dim=(-1, -2)),
        "feat_mse": diff.square().mean(dim=(-1, -2)),
        "cosine": F.cosine_similarity(pred.float(), true.float(), dim=-1).mean(-1),
    }


def scaled_thresholds(
    thresholds: tuple[float, ...] | list[float],
    size: tuple[int, int],
    ref: tuple[int, int] = DEXWM_FRAME,
) -> list[float]:
    """Thresholds in pixels of a `ref` (H, W) frame -> pixels of a `size` frame, scaled by the ratio
    of the image diagonals (equal to the side ratio when the aspect ratios agree)."""
    s = math.hypot(*size) / math.hypot(*ref)
    return [float(t) * s for t in thresholds]


def pck_counts(
    pred_uv: torch.Tensor, true_uv: torch.Tensor, visible: torch.Tensor, thresholds: list[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """pred_uv, true_uv (..., K, 2) pixels; visible (..., K) bool: keypoint visible in the truth.
    Returns hits (..., len(thresholds)): visible keypoints within each threshold, and the
    denominator (...,): visible keypoints. NaN positions of invisible keypoints are harmless."""
    dist = (pred_uv.float() - true_uv.float()).norm(dim=-1)  # (..., K)
    thr = torch.tensor(thresholds, dtype=dist.dtype, device=dist.device)
    within = (dist[..., None] <= thr) & visible[..., None]  # (..., K, T)
    return within.sum(-2), visible.sum(-1)


class _Sums:
    def __init__(self, horizon: int) -> None:
        self.n = 0
        self.sum: dict[str, torch.Tensor] = defaultdict(
            lambda: torch.zeros(horizon, dtype=torch.float64)
        )
        self.sumsq: dict[str, torch.Tensor] = defaultdict(
            lambda: torch.zeros(horizon, dtype=torch.float64)
        )
        self.hits: torch.Tensor | None = None  # (H, T)
        self.visible: torch.Tensor | None = None  # (H,)


class Accumulator:
    """Per-step sums of the metrics by (group, method). A clip belongs to several groups (e.g. its
    dataset, its embodiment, "all")."""

    def __init__(self, horizon: int, thresholds_px: list[float]) -> None:
        self.horizon, self.thresholds_px = horizon, list(thresholds_px)
        self.sums: dict[tuple[str, str], _Sums] = {}
        self.clips: dict[str, int] = defaultdict(int)

    def _get(self, group: str, method: str) -> _Sums:
        return self.sums.setdefault((group, method), _Sums(self.horizon))

    @staticmethod
    def _masks(groups: list[list[str]]) -> dict[str, torch.Tensor]:
        names = sorted({g for gs in groups for g in gs})
        return {n: torch.tensor([n in gs for gs in groups]) for n in names}

    def count_clips(self, groups: list[list[str]]) -> None:
        for gs in groups:
            for g in gs:
                self.clips[g] += 1

    def add_features(
        self,
        groups: list[list[str]],
        method: str,
        errors: dict[str, torch.Tensor],
        reference: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """errors: {metric: (B, H)} for B clips with group lists `groups`; `reference` (the model's
        errors on the same clips) adds the paired difference `<metric>_diff` (this - reference)."""
        vals = {k: v.detach().double().cpu() for k, v in errors.items()}
        if reference is not None:
            for k in ("feat_mae",):
                if k in vals and k in reference:
                    vals[f"{k}_diff"] = vals[k] - reference[k].detach().double().cpu()
        for g, m in self._masks(groups).items():
            s = self._get(g, method)
            s.n += int(m.sum())
            for k, v in vals.items():
                s.sum[k] += v[m].sum(0)
                s.sumsq[k] += v[m].square().sum(0)

    def add_pck(
        self, groups: list[list[str]], method: str, hits: torch.Tensor, visible: torch.Tensor
    ) -> None:
        """hits (B, H, T) and visible (B, H) from `pck_counts`."""
        hits, visible = hits.detach().double().cpu(), visible.detach().double().cpu()
        for g, m in self._masks(groups).items():
            s = self._get(g, method)
            h, v = hits[m].sum(0), visible[m].sum(0)
            s.hits = h if s.hits is None else s.hits + h
            s.visible = v if s.visible is None else s.visible + v

    def result(self) -> dict:
        """{group: {method: {metric: [H], metric_se: [H], pck: {thr: [H]}, pck_visible: [H]}}}.
        PCK is None at steps without a visible keypoint. Thresholds are keyed by their value in
        the evaluated frame's pixels, rounded to 3 decimals."""
        out: dict = defaultdict(dict)
        for (g, method), s in self.sums.items():
            r: dict = {}
            if s.n:
                r["clips"] = s.n
                for k, tot in s.sum.items():
                    mean = tot / s.n
                    var = (s.sumsq[k] / s.n - mean.square()).clamp(min=0) * s.n / max(s.n - 1, 1)
                    r[k] = mean.tolist()
                    r[f"{k}_se"] = (var / s.n).sqrt().tolist()
            if s.visible is not None:
                pck = s.hits / s.visible.clamp(min=1)[:, None]  # (H, T)
                none = s.visible == 0
                r["pck"] = {
                    f"{t:.3f}": [None if none[i] else float(pck[i, j]) for i in range(self.horizon)]
                    for j, t in enumerate(self.thresholds_px)
                }
                r["pck_visible"] = s.visible.long().tolist()
            out[g][method] = r
        return dict(out)
