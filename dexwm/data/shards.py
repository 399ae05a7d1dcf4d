"""Writing shards: atomic files, resumable parallel preparation jobs, the manifest.

Every preparation command (human video, DROID, sim episodes, feature cache) is a list of work items
turned into webdataset samples by a pure `process(payload) -> list[sample]` function. `run_shard_job`
runs it with a progress bar and `workers` processes, writes each finished item to its own part file
at once (so a killed job loses no finished item), packs parts into shards of `items_per_shard` items,
and writes `manifest.json` last. Re-running the same job resumes; items that fail are recorded in the
manifest with the reason and the job goes on. Reading manifests (and the one-line summary every
command ends with): dexwm.data.manifest.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing as mp
import shutil
import tarfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from dexwm.data.manifest import (  # noqa: F401  (re-exported: the shard API in one place)
    MANIFEST,
    read_manifest,
    record_notes,
    shard_paths,
    summarize,
)
from dexwm.data.schema import SCHEMA_VERSION
from dexwm.io import (
    InputError,
    atomic_write_bytes,
    atomic_write_json,
    exit_with_parent,
    sha256_file,
)

PARTS = ".parts"
JOB_FILE = ".job.json"


@dataclass(frozen=True, kw_only=True)
class ShardJob:
    """What every preparation command shares; a command's settings subclass it.

    Args:
        out: output folder for the shards and manifest.json.
        items_per_shard: inputs per shard file.
        workers: parallel processes.
        overwrite: replace a different earlier job in `out`.
        progress: show a progress bar.
    """

    out: Path
    items_per_shard: int = 16
    workers: int = 1
    overwrite: bool = False
    progress: bool = True
    # settings that do not decide the shards' content (e.g. where model files were found)
    not_content: ClassVar[tuple[str, ...]] = ()

    def settings(self) -> dict:
        """What decides the shards' content, as plain data: recorded in the manifest, and a
        re-run with other settings is another job (a re-run with more workers is the same)."""
        skip = {f.name for f in fields(ShardJob)} | set(self.not_content)
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.name not in skip}

    def run(
        self,
        items: Sequence[tuple[str, Any]],
        process: Callable[[Any], list[dict]],
        desc: str,
        prefix: str = "shard",
        extra: dict | None = None,
    ) -> dict:
        """`run_shard_job` with these settings (+ `extra` plain data) as the job's config."""
        return run_shard_job(
            items, process, self.out, config={**self.settings(), **(extra or {})},
            items_per_shard=self.items_per_shard, workers=self.workers, prefix=prefix, desc=desc,
            overwrite=self.overwrite, progress=self.progress,
        )  # fmt: skip


def _plain(v: Any) -> Any:
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, tuple | list):
        return [_plain(x) for x in v]
    return v


class Skip(Exception):
    """Raised by a process function to skip an item; the message is recorded as the reason."""


def encode_member(key: str, value: Any) -> bytes:
    """One sample field -> bytes, by extension, as webdataset's writer does for these types
    (.npy: numpy format, .json: JSON, bytes: as they are). Kept here so that writer processes do
    not import webdataset, which imports torch (5-7 s per worker process)."""
    if isinstance(value, bytes):
        return value
    if key.endswith(".npy"):
        buf = io.BytesIO()
        np.save(buf, np.asarray(value), allow_pickle=False)
        return buf.getvalue()
    if key.endswith(".json"):
        return json.dumps(value).encode()
    if isinstance(value, str):
        return value.encode()
    raise TypeError(f"cannot encode field {key!r} of type {type(value).__name__}")


def samples_to_tar_bytes(samples: Sequence[dict]) -> bytes:
    """Encode webdataset samples ({'__key__': ..., 'ext': value}) into tar bytes: members named
    <key>.<ext>, mtime 0 (deterministic bytes), readable by webdataset."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for s in samples:
            key = s["__key__"]
            for ext, value in s.items():
                if ext.startswith("__"):
                    continue
                data = encode_member(ext, value)
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime, info.mode = len(data), 0, 0o444
                info.uname = info.gname = "bigdata"
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _pack_tars(parts: Sequence[Path], out: Path) -> int:
    """Concatenate the members of several tar files into one new tar, atomically. Returns bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as dst:
        for part in parts:
            with tarfile.open(part, "r") as src:
                for member in src.getmembers():
                    dst.addfile(member, src.extractfile(member))
    atomic_write_bytes(out, buf.getvalue())
    return len(buf.getvalue())


def _run_item(args: tuple) -> dict:
    """Worker body: process one item, write its part file, return a small status record."""
    process, index, key, payload, parts_dir = args
    t0 = time.time()
    status: dict[str, Any] = {"index": index, "key": key, "samples": 0, "skipped": None}
    try:
        samples = process(payload)
        if not samples:
            raise Skip("produced no samples")
        atomic_write_bytes(Path(parts_dir) / f"{index:08d}.tar", samples_to_tar_bytes(samples))
        status["samples"] = len(samples)
    except Skip as e:
        status["skipped"] = str(e)
    except Exception as e:  # recorded, reported at the end; the job goes on
        status["skipped"] = f"error: {type(e).__name__}: {e}"
        status["traceback"] = traceback.format_exc(limit=6)
    status["seconds"] = round(time.time() - t0, 3)
    atomic_write_json(Path(parts_dir) / f"{index:08d}.json", status)
    return status


def _fingerprint(keys: Sequence[str], config: dict) -> str:
    blob = json.dumps({"keys": list(keys), "config": config}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_shard_job(
    items: Sequence[tuple[str, Any]],
    process: Callable[[Any], list[dict]],
    out_dir: str | Path,
    *,
    config: dict,
    items_per_shard: int = 16,
    workers: int = 1,
    prefix: str = "shard",
    desc: str = "items",
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Run a resumable, parallel shard-writing job and return its manifest.

    items: (unique key, payload) pairs in a fixed order; payloads and `process` must be picklable
    when workers > 1. config: the job's settings, saved in the manifest; re-running into the same
    folder with a different item list or config raises unless `overwrite`.
    """
    from tqdm.auto import tqdm

    out = Path(out_dir)
    keys = [k for k, _ in items]
    if len(set(keys)) != len(keys):
        raise ValueError("item keys must be unique")
    fp = _fingerprint(keys, config)
    job_path, parts = out / JOB_FILE, out / PARTS
    if job_path.exists():
        old = json.loads(job_path.read_text())
        if old.get("fingerprint") != fp:
            if not overwrite:
                raise InputError(
                    f"{out}: holds a different job (other inputs or settings); "
                    "use another folder or pass overwrite=True (--overwrite true)"
                )
            shutil.rmtree(out)
        elif (out / MANIFEST).exists():
            return json.loads((out / MANIFEST).read_text())
    elif out.exists() and any(out.glob(f"{prefix}-*.tar")):
        if not overwrite:
            raise InputError(
                f"{out}: already has shards from an unknown job; use another folder or pass "
                "overwrite=True (--overwrite true)"
            )
        shutil.rmtree(out)
    parts.mkdir(parents=True, exist_ok=True)
    atomic_write_json(job_path, {"fingerprint": fp, "config": config, "items": len(keys)})

    t0 = time.time()
    n_shards = max(1, -(-len(items) // items_per_shard))
    shard_name = [f"{prefix}-{k:06d}.tar" for k in range(n_shards)]
    status: dict[int, dict] = {}
    for i in range(len(items)):
        p = parts / f"{i:08d}.json"
        if p.exists():
            status[i] = json.loads(p.read_text())
    shard_done = {k: (parts / f"{shard_name[k]}.json").exists() for k in range(n_shards)}
    todo = [
        (process, i, key, payload, str(parts))
        for i, (key, payload) in enumerate(items)
        if i not in status and not shard_done[i // items_per_shard]
    ]

    def finish_shard(k: int) -> None:
        lo, hi = k * items_per_shard, min(len(items), (k + 1) * items_per_shard)
        recs = [status[i] for i in range(lo, hi)]
        tars = [parts / f"{i:08d}.tar" for i in range(lo, hi) if status[i]["samples"] > 0]
        record: dict[str, Any] = {"name": None, "samples": 0, "bytes": 0, "sha256": None}
        if tars:
            record["bytes"] = _pack_tars(tars, out / shard_name[k])
            record.update(
                name=shard_name[k],
                samples=sum(r["samples"] for r in recs),
                sha256=sha256_file(out / shard_name[k]),
            )
        record["items"] = recs
        atomic_write_json(parts / f"{shard_name[k]}.json", record)
        for i in range(lo, hi):
            for ext in (".tar", ".json"):
                (parts / f"{i:08d}{ext}").unlink(missing_ok=True)
        shard_done[k] = True

    def maybe_finish(i: int) -> None:
        k = i // items_per_shard
        lo, hi = k * items_per_shard, min(len(items), (k + 1) * items_per_shard)
        if not shard_done[k] and all(j in status for j in range(lo, hi)):
            finish_shard(k)

    for i in list(status):
        maybe_finish(i)
    bar = tqdm(total=len(items), initial=len(items) - len(todo), desc=desc, disable=not progress)
    if workers > 1 and len(todo) > 1:
        ctx = mp.get_context("spawn")
        with ctx.Pool(workers, initializer=exit_with_parent) as pool:
            for st in pool.imap_unordered(_run_item, todo):
                status[st["index"]] = st
                maybe_finish(st["index"])
                bar.update(1)
    else:
        for args in todo:
            st = _run_item(args)
            status[st["index"]] = st
            maybe_finish(st["index"])
            bar.update(1)
    bar.close()

    records = [json.loads((parts / f"{n}.json").read_text()) for n in shard_name]
    skipped = [
        {"key": r["key"], "reason": r["skipped"]}
        for rec in records
        for r in rec["items"]
        if r["skipped"] is not None
    ]
    errors = [r for rec in records for r in rec["items"] if r.get("traceback")]
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "job": config,
        "fingerprint": fp,
        "counts": {
            "items": len(items),
            "items_ok": len(items) - len(skipped),
            "items_skipped": len(skipped),
            "samples": sum(r["samples"] for r in records),
            "shards": sum(r["name"] is not None for r in records),
        },
        "shards": [
            {k: r[k] for k in ("name", "samples", "bytes", "sha256")} for r in records if r["name"]
        ],
        "skipped": skipped,
        "seconds_this_run": round(time.time() - t0, 2),
    }
    if errors:
        print(f"[dexwm] {len(errors)} item(s) failed with errors; first:\n{errors[0]['traceback']}")
    atomic_write_json(out / MANIFEST, manifest)
    shutil.rmtree(parts, ignore_errors=True)
    return manifest
