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
import re
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
_BAD_SHARDS: set[str] = set()


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


def _shard_of(exn: Exception) -> str:
    """The shard a webdataset exception is about (its url, or the file object's name)."""
    for a in reversed(exn.args):
        m = re.search(r"([^\s'\"<>]+\.tar)\b", str(a))
        if m:
            return m.group(1)
    return "?"


def _handler(on_bad: str):
    def handle(exn: Exception) -> bool:
        shard = _shard_of(exn)
        msg = f"cannot read shard {shard}: {type(exn).__name__}: {exn.args[0] if exn.args else exn}"
        if on_bad == "skip":
            if shard not in _BAD_SHARDS:
                _BAD_SHARDS.add(shard)
                BAD["shards"] += 1
                warnings.warn(msg + " (skipped)", stacklevel=2)
            return True
        raise ShardError(msg) from exn

    return handle


def tar_samples(on_bad: str):
    """Shard URLs -> samples (webdataset's tar reading and key grouping), where a new shard always
    starts a new sample, so a truncated shard's last partial sample never merges into the next."""
    from webdataset.tariterators import group_by_keys, tar_file_expander, url_opener

    handler = _handler(on_bad)

    def boundaries(files: Iterator[dict]) -> Iterator[dict]:
        url = None
        for f in files:
            if f and f.get("__url__") != url:
                if url is not None:
                    yield {}  # end-of-shard marker: flush the sample being grouped
                url = f.get("__url__")
            yield f

    def stage(src: Iterator[dict]) -> Iterator[dict]:
        files = tar_file_expander(url_opener(src, handler=handler), handler=handler)
        return group_by_keys(boundaries(files), handler=handler)

    return stage


class Epoch:
    """The current epoch, shared by a pipeline's stages and set before each epoch (workers are not
    persistent, so each epoch's workers get the new value). Every random choice of the pipeline is
    seeded from (seed, epoch, rank, worker): a resumed run sees the same data as an uninterrupted one."""

    def __init__(self) -> None:
        self.value = 0


def rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _rng(seed: int, epoch: Epoch, per_worker: bool = True) -> random.Random:
    info = torch.utils.data.get_worker_info()
    parts = (seed, epoch.value) + ((rank_world()[0], info.id if info else 0) if per_worker else ())
    return random.Random(repr(parts))


class ShardList(torch.utils.data.IterableDataset):
    """Source stage: shard URLs in an epoch-seeded order (the same on every rank, so the node
    split is a partition), or, resampled, an endless seeded random choice per rank and worker."""

    def __init__(
        self, urls: list[str], resampled: bool, shuffle: bool, seed: int, epoch: Epoch
    ) -> None:
        self.urls, self.resampled, self.shuffle, self.seed, self.epoch = (
            urls,
            resampled,
            shuffle,
            seed,
            epoch,
        )

    def __iter__(self) -> Iterator[dict]:
        if self.resampled:
            rng = _rng(self.seed, self.epoch)
            while True:
                yield {"url": rng.choice(self.urls)}
        order = list(self.urls)
        if self.shuffle:
            _rng(self.seed, self.epoch, per_worker=False).shuffle(order)
        yield from ({"url": u} for u in order)


def shuffled(bufsize: int, seed: int, epoch: Epoch):
    """Sample shuffle buffer, seeded per epoch, rank and worker."""

    def stage(src: Iterator[dict]) -> Iterator[dict]:
        rng, buf = _rng(seed + 1, epoch), []
        for x in src:
            buf.append(x)
            if len(buf) >= bufsize:
                i = rng.randrange(len(buf))
                buf[i], buf[-1] = buf[-1], buf[i]
                yield buf.pop()
        rng.shuffle(buf)
        yield from buf

    return stage


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


def to_clips(cfg: ClipConfig, seed: int, epoch: Epoch):
    def stage(src: Iterator[dict]) -> Iterator[dict]:
        rng = np.random.default_rng(_rng(seed + 2, epoch).getrandbits(64))
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
    epoch: Epoch | None = None,
) -> wds.DataPipeline:
    """Pipeline of clips (not batched) of one data source."""
    urls = expand_paths(source.paths)
    epoch = epoch or Epoch()
    return wds.DataPipeline(
        ShardList(urls, resampled, shuffle > 0, seed, epoch),  # shard URLs, epoch-seeded order
        *([] if resampled else [wds.split_by_node]),  # DDP rank -> its shards
        wds.split_by_worker,  # dataloader worker -> its shards
        tar_samples(on_bad),  # tar members -> samples
        *([shuffled(shuffle, seed, epoch)] if shuffle else []),  # sample shuffle buffer
        wds.decode(handler=_handler(on_bad)),  # .npy -> arrays, .json -> dicts (mp4 stays bytes)
        validated(on_bad, need_feats=cfg.features == "feats"),  # schema v1 or a clear error
        to_clips(cfg, seed, epoch),  # frames/feats + actions at the sampled indices
    )


def mixed(streams: list, weights: list[float], seed: int, epoch: Epoch, longest: bool):
    """Interleave clip streams, drawing each next clip from a stream with probability ~ weight."""

    def stage() -> Iterator[dict]:
        rng = _rng(seed + 3, epoch)
        its, w = [iter(s) for s in streams], list(weights)
        while its:
            i = rng.choices(range(len(its)), weights=w)[0]
            try:
                yield next(its[i])
            except StopIteration:
                if not longest:
                    return
                del its[i], w[i]

    return stage


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
) -> wds.WebLoader:
    """Batches of clips from one or several weighted sources. resampled=True: infinite stream (set
    epoch_batches); otherwise one pass over the shards per epoch. `epoch`: set its value before each
    epoch for a fresh, reproducible data order."""
    if not sources:
        raise ValueError("no data sources given")
    if on_bad not in ("raise", "skip"):
        raise ValueError(f"on_bad={on_bad!r}: use 'raise' or 'skip'")
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
        )
        for i, s in enumerate(sources)
    ]
    weights = [s.weight for s in sources]
    source = (
        streams[0]
        if len(streams) == 1
        else mixed(streams, weights, seed, epoch, longest=not resampled)
    )
    batches = wds.DataPipeline(
        source, wds.batched(batch_size, collation_fn=collate_clips, partial=not drop_last)
    )
    loader = wds.WebLoader(batches, batch_size=None, num_workers=num_workers)
    return loader.with_epoch(epoch_batches) if epoch_batches else loader


def source_from(spec: DataSource | dict | str | Path) -> DataSource:
    if isinstance(spec, DataSource):
        return spec
    if isinstance(spec, dict):
        return DataSource(**spec)
    return DataSource(paths=[str(spec)])
