"""Feature cache: float16 features equal to the encoder's, encoder identity in meta, resumable."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from _data import synthetic_shards

from dexwm.data.feature_cache import cache_features
from dexwm.data.shards import read_manifest, shard_paths
from dexwm.data.video import decode_video
from dexwm.models.encoders import EncoderSpec, FrozenEncoder

ROOT = Path(__file__).resolve().parents[1]


def test_cached_features_match_encoder(tmp_path_factory, tmp_path):
    raw = synthetic_shards(tmp_path_factory)
    man = cache_features(str(raw), tmp_path, EncoderSpec().to_dict(), FrozenEncoder, progress=False)
    assert man["counts"]["samples"] == read_manifest(raw)["counts"]["samples"]
    enc = FrozenEncoder()
    sample = next(iter(wds.WebDataset(shard_paths(tmp_path)[0], shardshuffle=False).decode()))
    feats = sample["feats.npy"]
    assert feats.dtype == np.float16 and feats.shape == (12, 16, 320)
    ref = enc(torch.from_numpy(decode_video(sample["frames.mp4"]))).numpy()
    np.testing.assert_allclose(feats.astype(np.float32), ref, rtol=2e-3, atol=2e-3)
    meta = sample["meta.json"]["encoder"]
    assert (
        meta["checksum"] == enc.checksum
        and meta["grid"] == [4, 4]
        and meta["input_size"] == [128, 128]
    )
    # frames and keypoints are carried over unchanged
    assert "frames.mp4" in sample and sample["hands.npy"].shape == (12, 2, 21, 3)


def test_killed_job_resumes_and_skips_finished_shards(tmp_path):
    from dexwm.data.synthetic import write_synthetic

    raw = tmp_path / "raw"
    write_synthetic(raw, episodes=12, T=12, items_per_shard=2)  # 6 shards
    out = tmp_path / "feats"
    cmd = [
        sys.executable,
        "-m",
        "data_prep.cache_features",
        "--shards",
        str(raw),
        "--out",
        str(out),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    first, second = out / "feats-000000.tar", out / "feats-000001.tar"
    while not second.exists() and proc.poll() is None:  # shard 0 is then fully recorded
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert first.exists() and not (out / "manifest.json").exists()
    stamp = first.stat().st_mtime_ns
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    man = read_manifest(out)
    assert man["counts"]["samples"] == 12 and man["counts"]["shards"] == 6
    assert first.stat().st_mtime_ns == stamp  # the finished shard was not redone
