"""Exploration episodes: written as schema-v1 shards, read back with webdataset, resumable."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("LP_NUM_THREADS", "1")  # Mesa llvmpipe: faster with one thread here

import json  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import webdataset as wds  # noqa: E402
from _procs import HAS_PROC, kill_once_workers_are_busy  # noqa: E402

from data_prep.sim_episodes import main  # noqa: E402
from dexwm.data.schema import validate_sample  # noqa: E402
from dexwm.data.shards import read_manifest, shard_paths  # noqa: E402
from dexwm.data.video import decode_video  # noqa: E402
from dexwm.io import sha256_file
from dexwm.sim.assets import ModelFilesNotFound  # noqa: E402
from dexwm.sim.explore import Explorer  # noqa: E402
from dexwm.sim.rig import Rig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
JOINTS = {"allegro": 23, "shadow": 30, "panda_gripper": 8}


def read_all(folder):
    ds = wds.WebDataset(shard_paths(folder), shardshuffle=False).decode()
    return list(ds)


@pytest.mark.parametrize("embodiment", ["allegro", "shadow", "panda_gripper"])
def test_episodes_written_as_shards_read_back(tmp_path, embodiment):
    man = main(embodiment, tmp_path, episodes=2, frames=8, size=64, progress=False)
    assert man["counts"]["samples"] == 2 and not man["skipped"]
    samples = read_all(tmp_path)
    assert len(samples) == 2
    for s in samples:
        validate_sample(s, need_frames=True)
        meta = s["meta.json"]
        assert meta["embodiment"] == embodiment and meta["fps"] == 10 and meta["camera_valid"]
        assert meta["size"] == [64, 64] and len(meta["joint_names"]) == JOINTS[embodiment]
        assert np.asarray(meta["intrinsics"]).shape == (3, 3)
        assert np.asarray(meta["camera_extrinsics"]["rotation"]).shape == (3, 3)
        frames = decode_video(s["frames.mp4"])
        assert frames.shape == (8, 64, 64, 3) and frames.std() > 10
        assert s["joints.npy"].shape == (8, JOINTS[embodiment])
        assert s["ee.npy"].shape == (8, 7) and s["ee.npy"].dtype == np.float32
        assert s["hands_valid.npy"].tolist() == [[False, True]] * 8
        assert not s["hands.npy"][:, 0].any() and not s["camera.npy"].any()
        assert (s["hands.npy"][:, 1, :, 2] > 0).all(), "hand in front of the camera"
        assert np.abs(np.diff(s["hands.npy"][:, 1], axis=0)).max() > 0, "the hand moves"
        if embodiment == "panda_gripper":
            closure = s["ee.npy"][:, 6]
            assert ((closure >= 0) & (closure <= 1)).all()
            np.testing.assert_array_equal(closure, s["joints.npy"][:, 7])


def test_episodes_are_deterministic():
    explorer = Explorer(Rig("allegro", size=64))
    a = explorer.run(5, frames=12, seed=3, render=False)
    b = explorer.run(5, frames=12, seed=3, render=False)
    c = explorer.run(6, frames=12, seed=3, render=False)
    np.testing.assert_array_equal(a["joints"], b["joints"])
    np.testing.assert_array_equal(a["hands"], b["hands"])
    assert not np.array_equal(a["joints"], c["joints"])


def test_bad_arguments_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown embodiment"):
        main("human", tmp_path)
    with pytest.raises(ValueError, match="even"):
        main("allegro", tmp_path, size=127)
    with pytest.raises(ModelFilesNotFound, match="does not exist"):
        main("allegro", tmp_path, menagerie=tmp_path / "no_models")


def test_killed_job_resumes_without_losing_episodes(tmp_path):
    out = tmp_path / "shards"
    args = [
        "--embodiment",
        "panda_gripper",
        "--out",
        str(out),
        "--episodes",
        "4",
        "--frames",
        "6",
        "--size",
        "32",
        "--items_per_shard",
        "1",
        "--progress",
        "false",
    ]
    cmd = [sys.executable, "-m", "data_prep.sim_episodes", *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(out.glob("*.tar")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # killed mid-way, with at least one episode finished
    proc.wait()
    done = {p.name: sha256_file(p) for p in out.glob("*.tar")}
    assert done and not (out / "manifest.json").exists()
    man = main(
        "panda_gripper", out, episodes=4, frames=6, size=32, items_per_shard=1, progress=False
    )
    assert man["counts"]["samples"] == 4 and man["counts"]["shards"] == 4
    for name, digest in done.items():  # finished episodes kept, byte for byte
        assert sha256_file(out / name) == digest
    keys = sorted(s["__key__"] for s in read_all(out))
    assert keys == [f"sim_panda_gripper/ep{i:06d}/front/0" for i in range(4)]
    assert json.loads((out / "manifest.json").read_text()) == read_manifest(out)


@pytest.mark.skipif(not HAS_PROC, reason="reads /proc (Linux)")
def test_killed_job_takes_its_workers_with_it(tmp_path):
    """SIGKILL on a 2-worker data-preparation job must not leave its workers on their current
    item: each episode here is 40,000 frames (minutes), so without the watchdog they would
    outlive the test; with it they end within seconds and write nothing more."""
    out = tmp_path / "shards"
    args = ["--embodiment", "panda_gripper", "--out", str(out), "--episodes", "2"]
    args += ["--frames", "40000", "--size", "32", "--workers", "2", "--progress", "false"]
    kill_once_workers_are_busy([sys.executable, "-m", "data_prep.sim_episodes", *args], ROOT)
    assert not list(out.glob("*.tar"))


def _palm_angle(rig, q) -> float:
    """Angle (rad) between the palm orientation at joints q and at rest."""
    r0, r = rig.commanded(rig.home)["palm_rot"], rig.commanded(q)["palm_rot"]
    return float(np.arccos(np.clip((np.trace(r0.T @ r) - 1) / 2, -1, 1)))


def test_pose_segment_reaches_orientations_the_sweeps_do_not():
    """The `pose` segment ends in a valid pose (hand above the table, palm in the sweep box)
    and, unlike the IK sweeps (tilt <= 0.35 rad, yaw <= 0.6 rad), often turns the palm further."""
    from dexwm.sim.explore import PALM_BOX, POSE_MIN_HEIGHT

    rig = Rig("allegro", size=64)
    explorer = Explorer(rig)
    rng = np.random.default_rng(0)
    ends, sweeps = [], []
    for _ in range(12):
        steps = explorer._segment(rng, "pose", rig.home)
        assert len(steps) >= 5, "a pose segment interpolates over at least 5 steps"
        np.testing.assert_allclose(steps[0], rig.home, atol=0.35)  # starts near where it was
        ends.append(steps[-1])
        sweeps.append(explorer._segment(rng, "sweep", rig.home)[-1])
    for q in ends:  # the pose, after a few settling steps of 0.03 rad: a few cm at most
        cmd = rig.commanded(q)
        assert cmd["keypoints"][:, 2].min() > POSE_MIN_HEIGHT - 0.03
        lo, hi = PALM_BOX[0] - 0.05, PALM_BOX[1] + 0.05
        assert (lo <= cmd["palm_pos"]).all() and (cmd["palm_pos"] <= hi).all()
        assert (rig.joint_limits[:, 0] <= q).all() and (q <= rig.joint_limits[:, 1]).all()
    pose_angles = [_palm_angle(rig, q) for q in ends]
    sweep_angles = [_palm_angle(rig, q) for q in sweeps]
    assert max(sweep_angles) < 0.75  # yaw 0.6 and tilt 0.35 at most
    assert max(pose_angles) > 0.75 and np.mean(pose_angles) > 1.5 * np.mean(sweep_angles)
