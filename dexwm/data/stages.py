"""The loader's pipeline stages (see loader.py for how they are put together), one webdataset
stage each: shard list, shard split, tar reading, shuffle buffer, decoding, schema validation,
clip building (per process, or planned everywhere and built by their owner), exact DDP batches,
weighted mixing. Every random choice is seeded from (seed, epoch[, rank, worker]).
"""

from __future__ import annotations

import os
import random
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from dexwm.data.clips import ClipConfig, build_clip, collate_clips, decode_sample, plan_clips
from dexwm.data.schema import SchemaError, validate_sample

# Shards/samples skipped in this process because they could not be read (on_bad="skip").
BAD = {"shards": 0, "samples": 0}
_BAD_SHARDS: set[str] = set()


class ShardError(RuntimeError):
    """A shard that cannot be read (truncated, corrupt, missing)."""


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
    seeded from (seed, epoch[, rank, worker]): a resumed run sees the same data as an uninterrupted
    one."""

    def __init__(self) -> None:
        self.value = 0


def rank_world() -> tuple[int, int]:
    """(rank, world size) of this process: torch.distributed if initialised, else the launcher's
    environment (torchrun / Lightning / SLURM set RANK and WORLD_SIZE), else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


@dataclass
class Where:
    """Rank and world size, captured when the loader is built (dataloader workers have no process
    group) and shipped to the workers with the pipeline."""

    rank: int = 0
    world: int = 1

    @staticmethod
    def worker() -> tuple[int, int]:
        info = torch.utils.data.get_worker_info()
        return (info.id, info.num_workers) if info else (0, 1)


def _rng(seed: int, epoch: Epoch, where: Where | None) -> random.Random:
    """Seeded by (seed, epoch) and, if `where` is given, this rank and worker."""
    parts = (seed, epoch.value) + ((where.rank, Where.worker()[0]) if where else ())
    return random.Random(repr(parts))


class ShardList(torch.utils.data.IterableDataset):
    """Source stage: shard URLs in an epoch-seeded order (the same on every rank), or, resampled, an
    endless seeded random choice per rank and worker."""

    def __init__(
        self, urls: list[str], resampled: bool, shuffle: bool, seed: int, epoch: Epoch, where: Where
    ):
        self.urls, self.resampled, self.shuffle = urls, resampled, shuffle
        self.seed, self.epoch, self.where = seed, epoch, where

    def __iter__(self) -> Iterator[dict]:
        if self.resampled:
            rng = _rng(self.seed, self.epoch, self.where)
            while True:
                yield {"url": rng.choice(self.urls)}
        order = list(self.urls)
        if self.shuffle:
            _rng(self.seed, self.epoch, None).shuffle(order)
        yield from ({"url": u} for u in order)


def split_shards(where: Where):
    """Shard-level split over ranks (captured) and dataloader workers."""

    def stage(src: Iterator[dict]) -> Iterator[dict]:
        w, nw = Where.worker()
        for i, s in enumerate(src):
            if i % (where.world * nw) == where.rank * nw + w:
                yield s

    return stage


def shuffled(bufsize: int, seed: int, epoch: Epoch, where: Where | None):
    """Sample shuffle buffer, seeded per epoch (and per rank and worker unless where is None)."""

    def stage(src: Iterator[dict]) -> Iterator[dict]:
        rng, buf = _rng(seed + 1, epoch, where), []
        for x in src:
            if not x:  # end-of-shard marker
                continue
            buf.append(x)
            if len(buf) >= bufsize:
                i = rng.randrange(len(buf))
                buf[i], buf[-1] = buf[-1], buf[i]
                yield buf.pop()
        rng.shuffle(buf)
        yield from buf

    return stage


def decoded(heavy: bool, on_bad: str):
    """Decode npy/json members (heavy=False: not features / raw frames yet)."""
    handler = _handler(on_bad)

    def stage(src: Iterator[dict]) -> Iterator[dict]:
        for sample in src:
            if not sample:
                continue
            try:
                yield decode_sample(sample, heavy=heavy)
            except Exception as e:
                e.args = (*e.args, sample.get("__url__", "?"))
                handler(e)

    return stage


def validated(on_bad: str, cfg: ClipConfig):
    """Schema v1 check, demanding the payload the clips need (features, or frames)."""

    def stage(src: Iterator[dict]) -> Iterator[dict]:
        for sample in src:
            has_feats = "feats.npy" in sample
            need_frames = (
                cfg.with_frames
                or cfg.features == "frames"
                or (cfg.features == "auto" and not has_feats)
            )
            try:
                validate_sample(sample, need_frames=need_frames, need_feats=cfg.features == "feats")
            except SchemaError as e:
                if on_bad != "skip":
                    raise
                BAD["samples"] += 1
                warnings.warn(f"{e} (skipped)", stacklevel=2)
                continue
            yield sample

    return stage


def to_clips(cfg: ClipConfig, seed: int, epoch: Epoch, where: Where):
    """All clips of each sample (this process reads only its own shards)."""

    def stage(src: Iterator[dict]) -> Iterator[dict]:
        rng = np.random.default_rng(_rng(seed + 2, epoch, where).getrandbits(64))
        for sample in src:
            for idx in plan_clips(sample, cfg, rng):
                yield build_clip(sample, idx, cfg, rng)

    return stage


def own_clips(cfg: ClipConfig, seed: int, epoch: Epoch, where: Where, source: int):
    """Exact split: every process plans the same clips (same rng everywhere) and builds its own.
    Ends with a marker {"__end__": (source, number of clips planned)} for `exact_batches`."""

    def stage(src: Iterator[dict]) -> Iterator[dict]:
        plan_rng = np.random.default_rng(_rng(seed + 2, epoch, None).getrandbits(64))
        rng = np.random.default_rng(_rng(seed + 3, epoch, where).getrandbits(64))  # augmentation
        w, nw = Where.worker()
        g = 0
        for sample in src:
            mine = []
            for idx in plan_clips(sample, cfg, plan_rng):
                if g % where.world == where.rank and (g // where.world) % nw == w:
                    mine.append(idx)
                g += 1
            if mine:
                decode_sample(sample, heavy=True)
                validate_sample(sample, need_feats=cfg.features == "feats")
                for idx in mine:
                    yield build_clip(sample, idx, cfg, rng)
        yield {"__end__": (source, g)}

    return stage


def exact_batches(batch_size: int, where: Where):
    """Batches such that every rank's worker w yields the same number of batches: hold back the
    last two batches' worth of clips; at the end, knowing every source's clip count (hence every
    rank's), split the remainder into the number of batches the fullest rank needs."""
    if batch_size < 2 and where.world > 1:
        raise ValueError("the exact DDP split needs batch_size >= 2")

    def count(G: int, r: int, w: int, nw: int) -> int:
        """Clips g < G assigned to rank r (g % world == r), worker w ((g // world) % nw == w)."""
        per_rank = max(0, (G - r + where.world - 1) // where.world)
        return max(0, (per_rank - w + nw - 1) // nw)

    def stage(src: Iterator[dict]) -> Iterator[dict]:
        w, nw = Where.worker()
        pending, out, ends = [], 0, {}
        for clip in src:
            if "__end__" in clip:
                ends[clip["__end__"][0]] = clip["__end__"][1]
                continue
            pending.append(clip)
            if len(pending) >= 2 * batch_size:
                yield collate_clips(pending[:batch_size])
                pending, out = pending[batch_size:], out + 1
        mine = {r: sum(count(G, r, w, nw) for G in ends.values()) for r in range(where.world)}
        need = -(-max(mine.values()) // batch_size) - out
        if need == 0 and not pending:
            return
        if not 1 <= need <= len(pending):
            raise RuntimeError(
                f"cannot give every rank the same number of batches ({mine} clips per rank for worker "
                f"{w}, batch size {batch_size}): too few clips for {where.world} ranks x {nw} workers"
            )
        for part in np.array_split(np.arange(len(pending)), need):
            yield collate_clips([pending[i] for i in part])

    return stage


def mixed(
    streams: list, weights: list[float], seed: int, epoch: Epoch, where: Where, longest: bool
):
    """Interleave clip streams, drawing each next clip from a stream with probability ~ weight."""

    def stage() -> Iterator[dict]:
        rng = _rng(seed + 4, epoch, where)
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
