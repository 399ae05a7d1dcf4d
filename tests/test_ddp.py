"""Real DDP: 2 CPU processes (gloo) through Lightning. Disjoint data, synchronised gradients, equal
batch counts, and a checkpoint that resumes on a different number of processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _data import synthetic_shards

ROOT = Path(__file__).resolve().parent


def run(data, out, devices, steps, ckpt=None, stop_at=0):
    cmd = [sys.executable, str(ROOT / "ddp_run.py"), str(data), str(out), "--devices", str(devices),
           "--max_steps", str(steps), "--stop_at", str(stop_at)] + (["--ckpt", str(ckpt)] if ckpt else [])  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    r = subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, env=dict(env, OMP_NUM_THREADS="1")
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return [json.loads((out / f"rank{i}.json").read_text()) for i in range(devices)]


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    data = synthetic_shards(tmp_path_factory)  # 12 samples -> 12 clips per epoch
    out = tmp_path_factory.mktemp("ddp")
    # 12 clips over 2 ranks, batch 4 -> 2 batches per rank per epoch; stopped (as if killed after
    # its checkpoint) at step 6 = 3 epochs of a 9-step schedule
    return data, out, run(data, out, devices=2, steps=9, stop_at=6)


def test_ranks_see_disjoint_data_with_equal_batch_counts(ddp):
    _, _, (r0, r1) = ddp
    assert r0["world"] == 2 and r0["step"] == r1["step"] == 6
    assert r0["batches"] == r1["batches"] == {"0": 2, "1": 2, "2": 2}
    for epoch in range(3):
        a = [tuple(map(str, c[1:])) for c in r0["clips"] if c[0] == epoch]
        b = [tuple(map(str, c[1:])) for c in r1["clips"] if c[0] == epoch]
        assert not set(a) & set(b)  # disjoint ...
        assert len({k for k, _ in a + b}) == 12  # ... and together every sample of the epoch


def test_gradients_are_synchronised(ddp):
    _, _, (r0, r1) = ddp
    assert r0["start"] == r1["start"]  # same initial weights ...
    assert r0["end"] == r1["end"]  # ... and identical after 6 steps on different data
    assert r0["end"] != r0["start"]


def test_checkpoint_resumes_on_one_process(ddp, tmp_path):
    data, out, (r0, _) = ddp
    last = out / "ckpt" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 6
    (solo,) = run(data, tmp_path, devices=1, steps=9, ckpt=last)
    assert solo["world"] == 1 and solo["step"] == 9
    assert solo["start"] == r0["end"]  # restored exactly the weights the 2-process run ended with
    assert sum(solo["batches"].values()) == 3  # 12 clips, batch 4, one process: 3 more steps
