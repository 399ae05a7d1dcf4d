"""Feature cache: run a frozen encoder over shards once, write the same samples + `feats.npy`.

The encoder is frozen, so training only needs its outputs: computing them once turns every later
epoch into pure predictor work. The encoder is handed in (`build(spec)`, e.g.
`dexwm.models.encoders.FrozenEncoder`): uint8 frames (B, H, W, 3) -> features (B, N, D), with
`describe()` naming it; the data layer never imports the model layer. Output shards mirror the input shards one to one; meta.json gains an
`encoder` entry (name, weights, input size, weights checksum, token grid). Resumable: shards already
written are skipped (see dexwm/data/shards.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from dexwm.data.loader import expand_paths
from dexwm.data.schema import validate_sample
from dexwm.data.shards import Skip, run_shard_job
from dexwm.data.stages import ShardError, shard_samples
from dexwm.data.video import decode_video

_ENCODERS: dict[str, torch.nn.Module] = {}  # one per worker process


def _encoder(build: Callable, spec: dict):
    key = repr((build, sorted(spec.items())))
    if key not in _ENCODERS:
        _ENCODERS[key] = build(spec)
    return _ENCODERS[key]


def encode_frames(enc: Callable, frames: np.ndarray, batch: int = 32) -> np.ndarray:
    """uint8 (T, H, W, 3) -> float16 (T, N, D)."""
    out = [enc(torch.from_numpy(frames[i : i + batch])) for i in range(0, len(frames), batch)]
    return torch.cat(out).to(torch.float16).numpy()


def _process(args: tuple) -> list[dict]:
    url, build, spec, drop_frames, threads = args
    if threads:
        torch.set_num_threads(threads)
    enc = _encoder(build, spec)
    info = enc.describe()
    out = []
    try:  # checked against the input's manifest: a truncated shard is skipped, never shrunk
        for sample in shard_samples([url]):
            validate_sample(sample, need_frames=True)
            frames = (
                sample["frames.npy"]
                if "frames.npy" in sample
                else decode_video(sample["frames.mp4"])
            )
            new = {k: v for k, v in sample.items() if not k.startswith("__") or k == "__key__"}
            new["feats.npy"] = encode_frames(enc, frames)
            new["meta.json"] = dict(sample["meta.json"], encoder=info)
            if drop_frames:
                new.pop("frames.npy", None)
                new.pop("frames.mp4", None)
            out.append(new)
    except ShardError as e:
        raise Skip(str(e)) from e
    return out


def cache_features(
    shards: list[str] | str,
    out_dir: str | Path,
    spec: dict,
    build: Callable[[dict], Callable],
    drop_frames: bool = False,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Encode every sample of `shards` (files, folders with manifest, globs) into `out_dir` with
    the encoder `build(spec)` (spec: plain data naming it, recorded in the manifest)."""
    spec = dict(spec)
    urls = [os.path.abspath(u) if "://" not in u else u for u in expand_paths(shards)]
    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else 0
    items = [(u, (u, build, spec, drop_frames, threads)) for u in urls]
    config = {"kind": "feature_cache", "encoder": spec, "inputs": urls, "drop_frames": drop_frames}
    return run_shard_job(
        items, _process, out_dir, config=config, items_per_shard=1, workers=workers,
        desc="feature cache (shards)", prefix="feats", overwrite=overwrite, progress=progress,
    )  # fmt: skip


def load_feature_episodes(paths: list[str] | str) -> list[dict]:
    """Shards with cached features -> [{"feats": (T, N, D) float16, "joints": (T, J)}]."""
    import webdataset as wds

    eps = []
    for url in expand_paths(paths):
        for s in wds.WebDataset(url, shardshuffle=False, empty_check=False).decode():
            if "feats.npy" not in s or "joints.npy" not in s:
                raise ValueError(
                    f"{s['__key__']}: needs feats.npy and joints.npy (cached robot episodes)"
                )
            eps.append({"feats": s["feats.npy"], "joints": s["joints.npy"].astype(np.float32),
                        "encoder": s["meta.json"].get("encoder")})  # fmt: skip
    return eps
