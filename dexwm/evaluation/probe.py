"""Keypoint probe: a heatmap decoder trained on TRUE encoder features of held-in shards, then run on
PREDICTED features to measure how well predictions keep the hands where they are (DexWM's PCK).

Like DexWM's evaluation model it is a ViT heatmap decoder larger than the training-time hand head
(by default 1.5 times as wide and one block deeper). It reads RAW encoder features through its own
normaliser, so one probe serves every model trained on the same encoder. Trained with a spatial
softmax cross-entropy against Gaussian targets (converges in a few hundred CPU steps); positions are
the heatmap argmax refined to sub-pixel precision by a parabola through its neighbours.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from dexwm.models.hand_head import HandHead, HandHeadConfig, render_heatmaps
from dexwm.models.normalizer import Normalizer


@dataclass
class ProbeConfig:
    """Probe size and training. None: derived from the model's hand head (larger than it)."""

    dim: int | None = None  # None: 1.5 x the hand head's width, a multiple of 32 (256 if no head)
    depth: int | None = None  # None: the hand head's depth + 1 (4 if no head)
    heads: int = 8
    scale: float = 1.0  # heatmap resolution / encoder input resolution (DexWM: 1)
    sigma: float = 2.0  # Gaussian target width in encoder-input pixels (DexWM: 2)
    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    max_frames: int = 20000  # training frames, spread evenly over the held-in shards
    val_every: int = 10  # every k-th held-in sample is kept for the probe's own validation


def resolve(cfg: ProbeConfig, hand: HandHeadConfig | None) -> HandHeadConfig:
    dim = cfg.dim or (32 * round(1.5 * hand.dim / 32) if hand else 256)
    depth = cfg.depth or (hand.depth + 1 if hand else 4)
    return HandHeadConfig(dim=dim, depth=depth, heads=cfg.heads, sigma=cfg.sigma, scale=cfg.scale)


def refined_argmax(logits: torch.Tensor) -> torch.Tensor:
    """(..., K, H, W) heatmap logits -> (..., K, 2) positions (u, v) in heatmap pixels (continuous
    convention): the argmax, refined per axis by the vertex of the parabola through the logits at
    the peak and its two neighbours (exact for a log-Gaussian, which the probe's loss trains)."""
    H, W = logits.shape[-2:]
    flat = logits.reshape(-1, H, W)  # (M, H, W)
    peak = flat.flatten(1).argmax(-1)
    py, px = peak // W, peak % W  # (M,)
    m = torch.arange(flat.shape[0], device=logits.device)

    def vertex(prev, mid, nxt):
        curv = prev - 2 * mid + nxt
        off = 0.5 * (prev - nxt) / curv.where(curv < 0, torch.full_like(curv, -1.0))
        return torch.where(curv < 0, off, torch.zeros_like(off)).clamp(-0.5, 0.5)

    mid = flat[m, py, px]
    du = vertex(flat[m, py, (px - 1).clamp(min=0)], mid, flat[m, py, (px + 1).clamp(max=W - 1)])
    dv = vertex(flat[m, (py - 1).clamp(min=0), px], mid, flat[m, (py + 1).clamp(max=H - 1), px])
    uv = torch.stack([px.float() + 0.5 + du, py.float() + 0.5 + dv], -1)  # (M, 2)
    return uv.reshape(*logits.shape[:-2], 2)


class KeypointProbe(nn.Module):
    """RAW features (B, N, D) on a (gh, gw) token grid -> 12 heatmap logits at scale x input size."""

    def __init__(
        self, feat_dim: int, grid: tuple[int, int], input_size: tuple[int, int], head: dict
    ) -> None:
        super().__init__()
        self.head_cfg = HandHeadConfig(**head)
        self.input_size = tuple(input_size)
        self.ctor = dict(feat_dim=feat_dim, grid=list(grid), input_size=list(input_size), head=head)
        self.norm = Normalizer(feat_dim)
        self.head = HandHead(
            feat_dim, tuple(grid), self.head_cfg.heatmap_size(self.input_size), self.head_cfg
        )

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(raw.float()))  # (B, 12, h, w)

    @torch.no_grad()
    def keypoints(self, raw: torch.Tensor, chunk: int = 64) -> torch.Tensor:
        """RAW features (..., N, D) -> keypoints (..., 12, 2) in encoder-input pixels."""
        lead = raw.shape[:-2]
        flat = raw.reshape(-1, *raw.shape[-2:])
        uv = torch.cat(
            [refined_argmax(self(flat[i : i + chunk])) for i in range(0, len(flat), chunk)]
        )
        return (uv / self.head_cfg.scale).reshape(*lead, *uv.shape[-2:])


def probe_loss(logits: torch.Tensor, uv: torch.Tensor, visible: torch.Tensor, sigma: float):
    """Spatial softmax cross-entropy against normalised Gaussians at uv (B, K, 2) heatmap pixels,
    averaged over visible keypoints. logits (B, K, H, W)."""
    H, W = logits.shape[-2:]
    target = render_heatmaps(uv, (H, W), sigma).flatten(-2)  # (B, K, H*W)
    target = target / target.sum(-1, keepdim=True).clamp(min=1e-12)
    ce = -(target * logits.flatten(-2).log_softmax(-1)).sum(-1)  # (B, K)
    w = visible.float()
    return (ce * w).sum() / w.sum().clamp(min=1.0)


def train_probe(
    data: dict,
    feat_dim: int,
    grid: tuple[int, int],
    input_size: tuple[int, int],
    head: HandHeadConfig,
    cfg: ProbeConfig,
    seed: int = 0,
    progress: bool = True,
) -> tuple[KeypointProbe, dict]:
    """Train on `collect_frames` output (true RAW features + keypoints). Returns the probe and a
    summary (frames, seconds, mean pixel error and PCK on its validation samples)."""
    from tqdm import tqdm

    t0 = time.time()
    g = torch.Generator().manual_seed(seed)
    is_val = (data["sample"] % cfg.val_every) == cfg.val_every - 1
    if is_val.all() or not is_val.any():
        is_val = torch.zeros_like(is_val)
    tr, va = (~is_val).nonzero().squeeze(1), is_val.nonzero().squeeze(1)
    probe = KeypointProbe(feat_dim, grid, input_size, asdict(head))
    feats = data["feats"]
    mean = feats[tr].float().mean(dim=(0, 1))
    std = feats[tr].float().std(dim=(0, 1))
    probe.norm.set_stats(mean, std)
    opt = torch.optim.AdamW(probe.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    s, sig = head.scale, head.sigma * head.scale
    probe.train()
    for _ in tqdm(range(cfg.steps), desc="keypoint probe", disable=not progress, leave=False):
        b = tr[torch.randint(len(tr), (min(cfg.batch_size, len(tr)),), generator=g)]
        loss = probe_loss(probe(feats[b]), data["uv"][b] * s, data["visible"][b], sig)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    probe.eval()
    summary = {"train_frames": len(tr), "val_frames": len(va), "final_loss": loss.item()}
    if len(va):
        uv = probe.keypoints(feats[va])
        err = (uv - data["uv"][va]).norm(dim=-1)[data["visible"][va]]
        summary["val_mean_px_error"] = float(err.mean())
        summary["val_median_px_error"] = float(err.median())
    summary["seconds"] = round(time.time() - t0, 1)
    return probe, summary


def probe_config_dict(head: HandHeadConfig, cfg: ProbeConfig) -> dict:
    """Everything that determines a trained probe (for the cache key)."""
    d = asdict(cfg)
    d["head"] = asdict(head)
    d["lr_schedule"] = "onecycle"
    return d
