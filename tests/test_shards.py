"""Shard job runner: atomic parts, resume after interruption, manifest, skipped items."""

import json
import os

import numpy as np
import pytest
import webdataset as wds

from dexwm.data.schema import SchemaError, make_meta, sample_key, validate_sample
from dexwm.data.shards import Skip, read_manifest, run_shard_job, shard_paths
from dexwm.io import InputError


def make_sample(i: int, T: int = 5) -> dict:
    rng = np.random.default_rng(i)
    return {
        "__key__": sample_key("toy", f"ep{i}", "cam0", 0),
        "frames.npy": rng.integers(0, 255, (T, 8, 8, 3), dtype=np.uint8),
        "hands.npy": rng.normal(size=(T, 2, 21, 3)).astype(np.float32),
        "hands_uv.npy": rng.normal(size=(T, 2, 21, 2)).astype(np.float32),
        "hands_valid.npy": np.ones((T, 2), bool),
        "camera.npy": np.zeros((T, 6), np.float32),
        "meta.json": make_meta(
            source="toy", embodiment="human", fps=10, size=(8, 8), intrinsics=None, licence="test"
        ),
    }


def process(i: int) -> list[dict]:
    if i == 3:
        raise Skip("no hands in video")
    if i == 5:
        raise RuntimeError("decoder exploded")
    return [make_sample(i)]


def interrupting(i: int) -> list[dict]:
    if i == 6:
        raise KeyboardInterrupt
    return process(i)


def read_all(folder):
    ds = wds.WebDataset(shard_paths(folder), shardshuffle=False).decode()
    return {s["__key__"]: s for s in ds}


def test_job_writes_manifest_and_skips(tmp_path):
    items = [(f"ep{i}", i) for i in range(8)]
    man = run_shard_job(
        items, process, tmp_path, config={"a": 1}, items_per_shard=3, progress=False
    )
    assert man["counts"] == {
        "items": 8,
        "items_ok": 6,
        "items_skipped": 2,
        "samples": 6,
        "shards": 3,
    }
    reasons = {s["key"]: s["reason"] for s in man["skipped"]}
    assert reasons["ep3"] == "no hands in video"
    assert reasons["ep5"].startswith("error: RuntimeError: decoder exploded")
    got = read_all(tmp_path)
    assert len(got) == 6
    for i in (0, 1, 2, 4, 6, 7):
        s = got[f"toy/ep{i}/cam0/0"]
        ref = make_sample(i)
        for k in ("frames.npy", "hands.npy", "hands_valid.npy"):
            np.testing.assert_array_equal(s[k], ref[k])
        validate_sample(s, need_frames=True)
    assert not (tmp_path / ".parts").exists()


def test_resume_after_interrupt(tmp_path):
    items = [(f"ep{i}", i) for i in range(8)]
    with pytest.raises(KeyboardInterrupt):
        run_shard_job(items, interrupting, tmp_path, config={}, items_per_shard=4, progress=False)
    assert not (tmp_path / "manifest.json").exists()
    # first shard (items 0-3) was packed, items 4-5 are parts waiting for their shard
    assert (tmp_path / "shard-000000.tar").exists()
    parts = sorted(os.listdir(tmp_path / ".parts"))
    assert "00000004.tar" in parts and "00000006.tar" not in parts
    calls = []

    def counting(i):
        calls.append(i)
        return process(i)

    man = run_shard_job(items, counting, tmp_path, config={}, items_per_shard=4, progress=False)
    assert calls == [6, 7]  # finished items are not redone
    assert man["counts"]["samples"] == 6
    assert len(read_all(tmp_path)) == 6
    # a third run is a no-op returning the manifest
    assert (
        run_shard_job(items, counting, tmp_path, config={}, items_per_shard=4, progress=False)
        == man
    )
    assert calls == [6, 7]


def test_other_job_in_same_folder_refused(tmp_path):
    run_shard_job([("a", 0)], process, tmp_path, config={"x": 1}, progress=False)
    with pytest.raises(InputError, match="different job"):
        run_shard_job([("a", 0)], process, tmp_path, config={"x": 2}, progress=False)


def test_parallel_workers_match_serial(tmp_path):
    items = [(f"ep{i}", i) for i in range(6)]
    a = run_shard_job(items, process, tmp_path / "a", config={}, items_per_shard=2, progress=False)
    b = run_shard_job(
        items, process, tmp_path / "b", config={}, items_per_shard=2, workers=2, progress=False
    )
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]
    assert read_manifest(tmp_path / "b")["counts"]["samples"] == 4


def test_schema_errors_name_field():
    s = make_sample(0)
    s["__url__"] = "x.tar"
    s["meta.json"] = dict(s["meta.json"], schema_version=7)
    with pytest.raises(SchemaError, match="x.tar.*schema_version=7"):
        validate_sample(s)
    s = make_sample(0)
    s["hands.npy"][2, 1, 5, 0] = np.nan
    with pytest.raises(SchemaError, match="hands.npy has NaN/inf at frame 2, hand 1"):
        validate_sample(s)
    s = make_sample(0)
    s["hands_valid.npy"][2, 1] = False
    s["hands.npy"][2, 1, 5, 0] = np.nan  # invalid hands may hold NaN
    validate_sample(s)
    s["camera.npy"] = np.zeros((4, 6), np.float32)
    with pytest.raises(SchemaError, match=r"camera.npy has shape \(4, 6\)"):
        validate_sample(s)
    assert json.dumps(make_sample(0)["meta.json"])
