"""Streaming clips from webdataset shards: one pipeline stage per line.

Three ways to split the data over DDP ranks and dataloader workers:
- "shard" (one process): shards are divided among workers; one pass per epoch.
- "exact" (finite data on several ranks): every process reads every shard in the same epoch-seeded
  order, plans the same clips, and builds only its own (clip g goes to rank g % world, then to
  worker (g // world) % workers). No clip is duplicated or dropped, and every rank yields the same
  number of batches (the last batches of a rank may be one clip smaller), so DDP never waits at an
  epoch's end. Each process reads all shard bytes but decodes only its own clips' features/frames.
- resampled: an endless, seeded random choice of shards per rank and worker (large data, many
  GPUs); `epoch_batches` sets the epoch length, equal on every rank by construction.

Stages: shard list -> [split] -> tar members -> samples (a truncated / corrupt shard raises naming
it, or is skipped and counted) -> shuffle buffer -> decode npy/json -> schema validation -> clips
(frames/feats + actions) -> mix datasets with weights -> batches.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path

import webdataset as wds

from dexwm.data.clips import ClipConfig, collate_clips
from dexwm.data.shards import shard_paths
from dexwm.data.stages import (
    Epoch,
    ShardList,
    Where,
    decoded,
    exact_batches,
    mixed,
    own_clips,
    rank_world,
    shuffled,
    split_shards,
    tar_samples,
    to_clips,
    validated,
)


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


def clip_stream(
    source: DataSource,
    cfg: ClipConfig,
    *,
    shuffle: int = 0,
    resampled: bool = False,
    seed: int = 0,
    on_bad: str = "raise",
    epoch: Epoch | None = None,
    where: Where | None = None,
    exact: bool = False,
    source_id: int = 0,
) -> wds.DataPipeline:
    """Pipeline of clips (not batched) of one data source."""
    urls = expand_paths(source.paths)
    epoch, where = epoch or Epoch(), where or Where()
    if exact:
        return wds.DataPipeline(
            ShardList(urls, False, shuffle > 0, seed, epoch, where),  # same order in every process
            tar_samples(on_bad),  # tar members -> samples (every process reads every shard)
            *([shuffled(shuffle, seed, epoch, None)] if shuffle else []),  # same buffer everywhere
            decoded(heavy=False, on_bad=on_bad),  # meta + keypoints; features/frames stay bytes
            validated("raise", cfg),  # schema v1 (skipping here would desynchronise ranks)
            own_clips(cfg, seed, epoch, where, source_id),  # plan all clips, build this process's
        )
    return wds.DataPipeline(
        ShardList(urls, resampled, shuffle > 0, seed, epoch, where),  # shard URLs, epoch-seeded
        *([] if resampled else [split_shards(where)]),  # rank and worker -> their shards
        tar_samples(on_bad),  # tar members -> samples
        *([shuffled(shuffle, seed, epoch, where)] if shuffle else []),  # sample shuffle buffer
        decoded(heavy=True, on_bad=on_bad),  # .npy -> arrays, .json -> dicts (mp4 stays bytes)
        validated(on_bad, cfg),  # schema v1 or a clear error
        to_clips(cfg, seed, epoch, where),  # frames/feats + actions at the sampled indices
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
    epoch: Epoch | None = None,
    split: str = "auto",
) -> wds.WebLoader:
    """Batches of clips from one or several weighted sources.

    resampled=True: infinite stream (set epoch_batches). Otherwise one pass per epoch, split over
    DDP ranks by `split`: "auto" = "exact" when several ranks run, else "shard" (see module doc).
    `epoch`: set its value before each epoch for a fresh, reproducible data order."""
    if not sources:
        raise ValueError("no data sources given")
    if on_bad not in ("raise", "skip"):
        raise ValueError(f"on_bad={on_bad!r}: use 'raise' or 'skip'")
    if split not in ("auto", "exact", "shard"):
        raise ValueError(f"split={split!r}: use 'auto', 'exact' or 'shard'")
    where = Where(*rank_world())
    exact = not resampled and (split == "exact" or (split == "auto" and where.world > 1))
    epoch = epoch or Epoch()
    streams = [
        clip_stream(
            s,
            cfg,
            shuffle=shuffle,
            resampled=resampled,
            seed=seed + 17 * i,
            on_bad=on_bad,
            epoch=epoch,
            where=where,
            exact=exact,
            source_id=i,
        )  # fmt: skip
        for i, s in enumerate(sources)
    ]
    weights = [s.weight for s in sources]
    src = (
        streams[0]
        if len(streams) == 1
        else mixed(streams, weights, seed, epoch, where, longest=not resampled)
    )
    if exact:
        batches = wds.DataPipeline(src, exact_batches(batch_size, where))
    else:
        batches = wds.DataPipeline(
            src, wds.batched(batch_size, collation_fn=collate_clips, partial=not drop_last)
        )
    loader = wds.WebLoader(batches, batch_size=None, num_workers=num_workers)
    return loader.with_epoch(epoch_batches) if epoch_batches else loader


def source_from(spec: DataSource | dict | str | Path) -> DataSource:
    if isinstance(spec, DataSource):
        return spec
    if isinstance(spec, dict):
        return DataSource(**spec)
    return DataSource(paths=[str(spec)])
