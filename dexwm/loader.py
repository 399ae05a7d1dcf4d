"""Streaming clips from webdataset shards: one pipeline stage per line.

    shard list (paths, folders with manifest.json, globs, URLs; resampled = infinite)
    -> split by node (DDP rank) and by dataloader worker
    -> tar members -> samples (a truncated / corrupt shard raises naming it, or is skipped + counted)
    -> shuffle buffer -> decode npy/json -> schema validation -> clips (frames/feats + actions)
    -> mix several datasets with weights -> batches
"""

from __future__ import annotations

import glob
import os
import random
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import webdataset as wds

from dexwm.clips import ClipConfig, collate_clips, make_clips
from dexwm.schema import SchemaError, validate_sample
from dexwm.shards import shard_paths

# Shards/samples skipped in this process because they could not be read (on_bad="skip").
BAD = {"shards": 0, "samples": 0}


class ShardError(RuntimeError):
    """A shard that cannot be read (truncated, corrupt, missing)."""


@dataclass
class DataSource:
    """One dataset: shard files, folders holding a manifest.json, globs, brace patterns or URLs."""

    paths: list[str] = field(default_factory=list)
    weight: float = 1.0
    name: str | None = None


def expand_paths(paths: list[str] | str) -> list[str]:
    """-> sorted list of shard URLs; folders are read through their manifest.json."""
    import braceexpand

    paths = [paths] if isinstance(paths, str) else list(paths)
    urls: list[str] = []
    for p in paths:
        for q in braceexpand.braceexpand(str(p)):
            if "://" in q or q.startswith("pipe:"):
                urls.append(q)
            elif os.path.isdir(q):
                urls += shard_paths(q)
            elif any(ch in q for ch in "*?["):
                urls += sorted(glob.glob(q))
            elif os.path.isfile(q):
                urls.append(q)
            else:
                raise FileNotFoundError(f"shard path {q!r} does not exist")
    if not urls:
        raise ValueError(f"no shards found in {paths}")
    return urls


def _handler(on_bad: str):
    def handle(exn: Exception) -> bool:
        where = next((str(a) for a in reversed(exn.args) if isinstance(a, str) and ".tar" in a), None)
        msg = f"cannot read shard {where or ''}: {type(exn).__name__}: {exn.args[0] if exn.args else exn}"
        if on_bad == "skip":
            BAD["shards"] += 1
            warnings.warn(msg + " (skipped)", stacklevel=2)
            return True
        raise ShardError(msg) from exn

    return handle


def _worker_seed(seed: int) -> int:
    info = torch.utils.data.get_worker_info()
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    return seed + 1000 * rank + (info.id if info else 0)


def validated(on_bad: str, need_feats: bool):
    def stage(src: Iterator[dict]) -> Iterator[dict]:
        for sample in src:
            if not sample:  # webdataset's end-of-shard marker
                continue
            try:
                validate_sample(sample, need_feats=need_feats)
            except SchemaError as e:
                if on_bad != "skip":
                    raise
                BAD["samples"] += 1
                warnings.warn(f"{e} (skipped)", stacklevel=2)
                continue
            yield sample

    return stage


def to_clips(cfg: ClipConfig, seed: int):
    def stage(src: Iterator[dict]) -> Iterator[dict]:
        rng = np.random.default_rng(_worker_seed(seed))
        for sample in src:
            yield from make_clips(sample, cfg, rng)

    return stage


def clip_stream(
    source: DataSource,
    cfg: ClipConfig,
    *,
    shuffle: int = 0,
    resampled: bool = False,
    seed: int = 0,
    on_bad: str = "raise",
) -> wds.DataPipeline:
    """Pipeline of clips (not batched) of one data source."""
    urls = expand_paths(source.paths)
    return wds.DataPipeline(
        wds.ResampledShards(urls, seed=seed) if resampled else wds.SimpleShardList(urls),  # shards
        *([] if resampled or not shuffle else [wds.shuffle(len(urls), rng=random.Random(seed))]),
        *([] if resampled else [wds.split_by_node]),  # DDP rank -> its shards
        wds.split_by_worker,  # dataloader worker -> its shards
        wds.tarfile_to_samples(handler=_handler(on_bad)),  # tar members -> samples
        *([wds.shuffle(shuffle, initial=min(shuffle, 64))] if shuffle else []),  # sample buffer
        wds.decode(handler=_handler(on_bad)),  # .npy -> arrays, .json -> dicts (mp4 stays bytes)
        validated(on_bad, need_feats=cfg.features == "feats"),  # schema v1 or a clear error
        to_clips(cfg, seed),  # frames/feats + actions at the sampled indices
    )


def make_loader(
    sources: list[DataSource],
    cfg: ClipConfig,
    *,
    batch_size: int,
    num_workers: int = 0,
    shuffle: int = 256,
    resampled: bool = False,
    epoch_batches: int | None = None,
    seed: int = 0,
    on_bad: str = "raise",
    drop_last: bool = True,
) -> wds.WebLoader:
    """Batches of clips from one or several weighted sources. resampled=True: infinite stream (set
    epoch_batches); otherwise one pass over the shards per epoch."""
    if not sources:
        raise ValueError("no data sources given")
    if on_bad not in ("raise", "skip"):
        raise ValueError(f"on_bad={on_bad!r}: use 'raise' or 'skip'")
    streams = [
        clip_stream(s, cfg, shuffle=shuffle, resampled=resampled, seed=seed + i, on_bad=on_bad)
        for i, s in enumerate(sources)
    ]
    mixed = streams[0] if len(streams) == 1 else wds.RandomMix(streams, [s.weight for s in sources])
    batches = wds.DataPipeline(mixed, wds.batched(batch_size, collation_fn=collate_clips, partial=not drop_last))
    loader = wds.WebLoader(batches, batch_size=None, num_workers=num_workers, persistent_workers=num_workers > 0)
    return loader.with_epoch(epoch_batches) if epoch_batches else loader


def source_from(spec: DataSource | dict | str | Path) -> DataSource:
    if isinstance(spec, DataSource):
        return spec
    if isinstance(spec, dict):
        return DataSource(**spec)
    return DataSource(paths=[str(spec)])
