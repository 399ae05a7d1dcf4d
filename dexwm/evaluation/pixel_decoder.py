"""A small pixel decoder (features -> image) for pictures of rollouts only, as DINO-WM and DexWM do.

Trained on TRUE raw encoder features of held-in shards to reproduce the encoder's input crop; it
never enters a metric. A conv stack upsamples the token grid by 2 per stage to the output size.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dexwm.models.normalizer import Normalizer


@dataclass
class DecoderConfig:
    enabled: bool = True
    height: int | None = None  # output height (None: the encoder input's, at most 128); the width
    #   keeps the input's aspect ratio
    channels: int = 128  # after the first stage; halved per upsampling, at least 16
    steps: int = 800
    batch_size: int = 32
    lr: float = 2e-3
    max_frames: int = 3000  # training frames, spread evenly over the held-in shards


class PixelDecoder(nn.Module):
    """RAW features (B, N, D) on a (gh, gw) grid -> images (B, 3, h, w) in [0, 1]."""

    def __init__(
        self, feat_dim: int, grid: tuple[int, int], out_size: tuple[int, int], channels: int
    ) -> None:
        super().__init__()
        self.ctor = dict(
            feat_dim=feat_dim, grid=list(grid), out_size=list(out_size), channels=channels
        )
        self.grid, self.out_size = tuple(grid), tuple(out_size)
        self.norm = Normalizer(feat_dim)
        ups = max(0, math.ceil(math.log2(max(out_size[0] / grid[0], out_size[1] / grid[1]))))
        layers: list[nn.Module] = [nn.Conv2d(feat_dim, channels, 1)]
        c = channels
        for _ in range(ups):
            c_out = max(16, c // 2)
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(c, c_out, 3, padding=1),
                nn.GroupNorm(4, c_out),
                nn.SiLU(),
            ]
            c = c_out
        layers.append(nn.Conv2d(c, 3, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        B = raw.shape[0]
        x = self.norm(raw.float()).transpose(1, 2).reshape(B, -1, *self.grid)  # (B, D, gh, gw)
        x = self.net(x)  # (B, 3, gh * 2^k, gw * 2^k)
        if tuple(x.shape[-2:]) != self.out_size:
            x = F.interpolate(x, size=self.out_size, mode="bilinear", align_corners=False)
        return x.sigmoid()

    @torch.no_grad()
    def images(self, raw: torch.Tensor, chunk: int = 64) -> torch.Tensor:
        """RAW features (..., N, D) -> uint8 images (..., h, w, 3)."""
        lead = raw.shape[:-2]
        flat = raw.reshape(-1, *raw.shape[-2:])
        x = torch.cat([self(flat[i : i + chunk]) for i in range(0, len(flat), chunk)])
        x = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1)  # (M, h, w, 3)
        return x.reshape(*lead, *x.shape[1:])


def output_size(cfg: DecoderConfig, input_size: tuple[int, int]) -> tuple[int, int]:
    """Even (h, w) with the input's aspect ratio (even sizes: the pictures become H.264 videos)."""
    h = cfg.height or min(128, input_size[0])
    w = h * input_size[1] / input_size[0]
    return 2 * round(h / 2), 2 * round(w / 2)


def train_decoder(
    data: dict,
    feat_dim: int,
    grid: tuple[int, int],
    cfg: DecoderConfig,
    seed: int = 0,
    progress: bool = True,
) -> tuple[PixelDecoder, dict]:
    """Train on `collect_frames` output with pixels (true RAW features + input crops), L1 loss."""
    from tqdm import tqdm

    t0 = time.time()
    g = torch.Generator().manual_seed(seed)
    feats, pixels = data["feats"], data["pixels"]  # (M, N, D) f16, (M, h, w, 3) u8
    dec = PixelDecoder(feat_dim, grid, tuple(pixels.shape[1:3]), cfg.channels)
    dec.norm.set_stats(feats.float().mean(dim=(0, 1)), feats.float().std(dim=(0, 1)))
    opt = torch.optim.AdamW(dec.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    dec.train()
    for _ in tqdm(range(cfg.steps), desc="pixel decoder", disable=not progress, leave=False):
        b = torch.randint(len(feats), (min(cfg.batch_size, len(feats)),), generator=g)
        target = pixels[b].permute(0, 3, 1, 2).float() / 255  # (b, 3, h, w)
        loss = F.l1_loss(dec(feats[b]), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    dec.eval()
    return dec, {
        "train_frames": len(feats),
        "final_l1": loss.item(),
        "seconds": round(time.time() - t0, 1),
    }
