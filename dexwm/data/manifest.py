"""Reading `manifest.json`, the record a preparation job writes last: shard lists, what the shards
hold (per-shard sample count, bytes, sha256) for the loader to check truncated shards against,
notes and off-frame keypoint counts gathered from the samples, and the one-line summary every
preparation command ends with.
"""

from __future__ import annotations

import json
import re
import tarfile
from collections import Counter
from pathlib import Path

from dexwm.io import InputError, atomic_write_json

MANIFEST = "manifest.json"
OFF_FRAME_COUNTS = (
    "valid_hands",
    "hands_partly_off_frame",
    "valid_keypoints",
    "keypoints_off_frame",
)


def read_manifest(folder: str | Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.exists():
        raise InputError(f"{path} not found: the preparation job did not finish")
    return json.loads(path.read_text())


def shard_paths(folder: str | Path) -> list[str]:
    """Shard files listed in a folder's manifest, as paths."""
    folder = Path(folder)
    return [str(folder / s["name"]) for s in read_manifest(folder)["shards"]]


def shard_records(urls: list[str]) -> dict[str, dict]:
    """url -> the manifest's record of that shard ({name, samples, bytes, sha256}) for every local
    shard file listed in a manifest.json in its own folder; other urls are left out."""
    listed: dict[Path, dict[str, dict]] = {}
    out = {}
    for url in urls:
        if "://" in url or url.startswith("pipe:"):
            continue
        path = Path(url)
        if path.parent not in listed:
            try:
                shards = json.loads((path.parent / MANIFEST).read_text())["shards"]
                listed[path.parent] = {s["name"]: s for s in shards if s.get("name")}
            except (OSError, ValueError, KeyError, TypeError):
                listed[path.parent] = {}
        rec = listed[path.parent].get(path.name)
        if rec is not None:
            out[url] = rec
    return out


def size_mismatch(url: str, rec: dict) -> str | None:
    """Why a local shard cannot be what its manifest record says (missing, or another size), or
    None. Cheap: one stat, before anything of it is read."""
    try:
        size = Path(url).stat().st_size
    except OSError as e:
        return f"{url}: cannot be read ({type(e).__name__}: {e})"
    if rec.get("bytes") and size != rec["bytes"]:
        return (
            f"{url}: {size} bytes, but manifest.json records {rec['bytes']} bytes and "
            f"{rec.get('samples')} samples: the shard is truncated or was replaced"
        )
    return None


def count_mismatch(url: str, rec: dict, n: int) -> str | None:
    """Why a shard that yielded `n` samples is not the one its manifest record describes, or None."""
    if rec.get("samples") is not None and n != rec["samples"]:
        return (
            f"{url}: yielded {n} samples, but manifest.json records {rec['samples']}: the shard "
            "is truncated (a cut at a member boundary ends the tar reader without an error) or "
            "was replaced"
        )
    return None


def record_notes(out: str | Path) -> dict:
    """Add to manifest.json what samples carry in meta.json, per input: the notes (trimmed,
    truncated, dropped segments) and the off-frame keypoint counts (`off_frame`, summed into the
    manifest's counts). Rewrites the manifest atomically, so it stays written last."""
    out = Path(out)
    manifest = read_manifest(out)
    notes: dict[str, list[str]] = {}
    off: dict[str, Counter] = {}
    for shard in manifest["shards"]:
        with tarfile.open(out / shard["name"]) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".meta.json"):
                    meta = json.load(tar.extractfile(m))
                    if meta.get("notes"):
                        notes[meta["item_key"]] = meta["notes"]
                    if meta.get("off_frame"):
                        off.setdefault(meta["item_key"], Counter()).update(meta["off_frame"])
    manifest["notes"] = [{"key": k, "notes": v} for k, v in sorted(notes.items())]
    manifest["counts"]["items_with_notes"] = len(notes)
    if off:
        total = sum(off.values(), Counter())
        manifest["counts"].update({k: int(total[k]) for k in OFF_FRAME_COUNTS})
        manifest["off_frame"] = [
            {"key": k, **{c: int(v[c]) for c in OFF_FRAME_COUNTS}}
            for k, v in sorted(off.items())
            if v["keypoints_off_frame"]
        ]
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


def skip_kind(reason: str) -> str:
    """A skip reason -> its kind, for counting: no leading path, no details in parentheses or
    after ';' or ',', numbers as N. "/a/b.mp4: cannot open: moov atom not found; Invalid data ..."
    -> "cannot open: moov atom not found"."""
    r = (reason or "unknown").strip().splitlines()[0] if (reason or "").strip() else "unknown"
    head, sep, rest = r.partition(": ")
    if sep and ("/" in head or re.search(r"\.\w{1,5}$", head)):  # "<path>: what"
        r = rest
    r = re.split(r" \(|; |, ", r)[0]
    if len(r) > 60:
        r = r.split(": ")[0][:60]
    return re.sub(r"\d+(\.\d+)?", "N", r)


def summarize(manifest: dict, out: str | Path | None = None) -> tuple[str, bool]:
    """The one line a preparation command ends with, and whether it wrote any sample:
    'wrote 14 samples (1 shard) from 7 of 7 inputs to OUT; skipped 0' or '...; skipped 3:
    cannot open: moov atom not found x2, no hands detected in N frames x1'."""
    c = manifest["counts"]
    shards = f"{c['shards']} shard{'s' if c['shards'] != 1 else ''}"
    line = f"wrote {c['samples']} samples ({shards}) from {c['items_ok']} of {c['items']} inputs"
    line += f" to {out}" if out is not None else ""
    kinds = Counter(skip_kind(s["reason"]) for s in manifest.get("skipped", []))
    line += f"; skipped {sum(kinds.values())}"
    if kinds:
        line += ": " + ", ".join(f"{k} x{n}" for k, n in kinds.most_common())
    if c.get("valid_keypoints"):
        line += (
            f"; keypoints outside the stored frame: {c['keypoints_off_frame']} of "
            f"{c['valid_keypoints']} ({c['hands_partly_off_frame']} of {c['valid_hands']} hands)"
        )
    return line, c["samples"] > 0
