"""Dataset statistics for the model's normalisers: per-dimension action and feature mean / std.

Read deterministically (same clips on every DDP rank, no node split): up to `max_clips` clips per
source, spread evenly over all its shards, so every rank fits identical normalisers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from dexwm.data.clips import ClipConfig, make_clips
from dexwm.data.loader import DataSource, expand_paths
from dexwm.data.schema import validate_sample
from dexwm.data.stages import shard_samples
from dexwm.io import InputError, atomic_write_json


class RunningMoments:
    """Streaming mean / std per dimension in float64."""

    def __init__(self) -> None:
        self.n, self.s, self.ss = 0, None, None

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64).reshape(-1, x.shape[-1])
        if self.s is None:
            self.s, self.ss = np.zeros(x.shape[1]), np.zeros(x.shape[1])
        self.n += len(x)
        self.s += x.sum(0)
        self.ss += (x**2).sum(0)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.n:
            raise ValueError("no data to compute statistics from")
        mean = self.s / self.n
        return mean, np.sqrt(np.maximum(self.ss / self.n - mean**2, 0.0))


def iter_clips_evenly(
    source: DataSource, cfg: ClipConfig, max_clips: int, seed: int = 0, max_passes: int = 16
):
    """Up to max_clips clips of a source, an equal share from every shard (re-reading a shard, with
    new random clips, while it has too few samples for its share)."""
    urls = expand_paths(source.paths)
    per_shard = max(1, -(-max_clips // len(urls)))
    rng = np.random.default_rng(seed)
    for url in urls:
        taken = 0
        for _ in range(max_passes):
            before = taken
            for sample in shard_samples([url]):
                validate_sample(sample)
                for clip in make_clips(sample, cfg, rng):
                    yield clip
                    taken += 1
                if taken >= per_shard:
                    break
            if taken >= per_shard or taken == before:
                break


def compute_stats(
    sources: list[DataSource],
    cfg: ClipConfig,
    max_clips: int = 2000,
    encode: Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: bool = True,
) -> dict:
    """Action and (raw) feature statistics. `encode(frames uint8 (T,H,W,3)) -> (T,N,D)` is used for
    clips without cached features."""
    for src in sources:
        expand_paths(src.paths)  # a missing path fails here, before the progress bar
    act, feat = RunningMoments(), RunningMoments()
    n = 0
    total = max_clips * len(sources)
    with tqdm(total=total, desc="statistics", disable=not progress) as bar:
        for src in sources:
            for clip in iter_clips_evenly(src, cfg, max_clips):
                act.add(clip["actions"])
                f = clip.get("feats")
                if f is None and encode is not None:
                    f = encode(torch.from_numpy(clip["frames"])).numpy()
                if f is not None:
                    if feat.s is not None and f.shape[-1:] != feat.s.shape:
                        raise InputError(
                            f"{', '.join(map(str, src.paths))}: features of width {f.shape[-1]}, "
                            f"earlier sources {feat.s.shape[0]}: these sources' features were "
                            "cached with different encoders (re-cache them with one spec)"
                        )
                    feat.add(f)
                n += 1
                bar.update(1)
    if not n:
        paths = "; ".join(", ".join(map(str, s.paths)) for s in sources)
        raise InputError(
            f"{paths}: no clips of {cfg.num_frames} frames in these shards (samples too short "
            "for the clip settings?): no statistics"
        )
    a_mean, a_std = act.result()
    out = {"clips": n, "action_mean": a_mean.tolist(), "action_std": a_std.tolist()}
    if feat.n:
        f_mean, f_std = feat.result()
        out.update(feat_mean=f_mean.tolist(), feat_std=f_std.tolist())
    return out


def save_stats(path: str | Path, stats: dict) -> None:
    atomic_write_json(path, stats)


def load_stats(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
