"""DROID-format episodes -> shards: DexWM's gripper mapping, trimming, skips, real episodes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from data_prep.droid import main
from dexwm.data.schema import validate_sample
from dexwm.data.shards import shard_paths
from dexwm.data.video import decode_video, encode_mp4
from dexwm.embodiment import (
    CLOSED_RADII,
    OPEN_RADII,
    euler_xyz_to_matrix,
    matrix_to_euler_xyz,
    project,
)
from dexwm.keypoints import LEFT, RIGHT
from dexwm.prep.droid import gripper_hand_keypoints, read_episode


def read_samples(folder: Path) -> dict[str, dict]:
    ds = wds.WebDataset(shard_paths(folder), shardshuffle=False).decode()
    return {s["__key__"]: s for s in ds}


def check_recipe(hands: np.ndarray, valid: np.ndarray, ee: np.ndarray) -> None:
    """DexWM's DROID mapping, checked point by point: right wrist = EE position; finger a, joint r
    at radius OPEN/CLOSED_RADII[r] (closed iff gripper >= 0.5), angle 72 deg x a, at EE height;
    left hand absent."""
    assert valid[:, RIGHT].all() and not valid[:, LEFT].any() and not hands[:, LEFT].any()
    right = hands[:, RIGHT].astype(np.float64)  # (T, 21, 3)
    np.testing.assert_allclose(right[:, 0], ee[:, :3], atol=1e-6)
    off = right[:, 1:].reshape(-1, 5, 4, 3) - ee[:, None, None, :3]  # (T, finger, joint, xyz)
    np.testing.assert_allclose(off[..., 2], 0.0, atol=1e-6)  # horizontal, at EE height
    radii = np.where((ee[:, 6] >= 0.5)[:, None], CLOSED_RADII, OPEN_RADII)  # (T, 4)
    np.testing.assert_allclose(
        np.linalg.norm(off, axis=-1), np.broadcast_to(radii[:, None], off.shape[:3]), atol=1e-6
    )
    angle = np.degrees(np.arctan2(off[..., 1], off[..., 0]))  # (T, 5, 4)
    wrapped = (angle - 72.0 * np.arange(5)[:, None] + 180.0) % 360.0 - 180.0
    np.testing.assert_allclose(wrapped, 0.0, atol=1e-3)


def test_gripper_mapping_follows_the_recipe():
    ee = np.array(
        [
            [0.4, -0.1, 0.3, 3.0, 0.1, 0.2, 0.0],
            [0.5, 0.0, 0.2, 3.0, 0.1, 0.2, 0.49],
            [0.5, 0.0, 0.2, 0.0, 0.0, 0.0, 0.5],
            [0.5, 0.1, 0.25, 0.0, 0.0, 0.0, 1.0],
        ]
    )
    hands, uv, valid = gripper_hand_keypoints(ee)
    check_recipe(hands, valid, ee)
    assert not uv.any()  # no camera: no pixels
    # open / closed radii of the little finger (joints 1..4): 3/4/5/6 cm vs 3/4/3.5/3 cm
    np.testing.assert_allclose(
        np.linalg.norm(hands[1, RIGHT, 17:] - ee[1, :3], axis=-1),
        [0.03, 0.04, 0.05, 0.06],
        atol=1e-6,
    )
    np.testing.assert_allclose(
        np.linalg.norm(hands[2, RIGHT, 17:] - ee[2, :3], axis=-1),
        [0.03, 0.04, 0.035, 0.03],
        atol=1e-6,
    )


def test_extrinsics_put_the_gripper_in_the_camera_frame():
    ee = np.array([[0.5, 0.0, 0.1, 0, 0, 0, 0.0], [0.55, 0.05, 0.15, 0, 0, 0, 1.0]])
    # a camera 1 m in front of the robot at 0.5 m height, looking back at it: optical axis (z) along
    # base -x, image down (y) along base -z, image right (x) along base +y
    axes = np.array([[0.0, 1, 0], [0, 0, -1], [-1, 0, 0]]).T  # columns: camera x, y, z in base
    cam = np.concatenate([[1.5, 0.0, 0.5], matrix_to_euler_xyz(axes)])
    R = euler_xyz_to_matrix(cam[3:])
    np.testing.assert_allclose(R, axes, atol=1e-9)
    K = np.array([[130.0, 0, 160], [0, 139, 96], [0, 0, 1]])
    hands, uv, valid = gripper_hand_keypoints(ee, cam, K)
    base, _, _ = gripper_hand_keypoints(ee)
    np.testing.assert_allclose(hands[:, RIGHT], (base[:, RIGHT] - cam[:3]) @ R, atol=1e-6)
    np.testing.assert_allclose(uv[:, RIGHT], project(hands[:, RIGHT], K), atol=1e-3)
    assert valid[:, RIGHT].all() and (hands[:, RIGHT, :, 2] > 0.5).all()


def write_episode(
    root: Path, ep: str, T: int, video_frames: int | None = None, cams: int = 3
) -> dict:
    """A DROID-format episode as in the Ctrl-World export: 15 Hz raw fields, video-rate `states`
    (every 3rd raw sample), and one mp4 per camera (`video_frames` frames, default T)."""
    rng = np.random.default_rng(int(ep) if ep.isdigit() else 0)
    raw = 3 * T
    cart = np.cumsum(rng.normal(scale=0.005, size=(raw, 6)), axis=0) + [0.5, 0, 0.3, 3.0, 0, 0]
    grip = (np.arange(raw) > raw // 2).astype(float) * 0.9  # closes half way
    joints = rng.normal(size=(raw, 7))
    ann = {
        "texts": ["pick the cube"],
        "episode_id": int(ep) if ep.isdigit() else ep,
        "success": 1,
        "video_length": T,
        "state_length": T,
        "raw_length": raw,
        "videos": [{"video_path": f"videos/train/{ep}/{c}.mp4"} for c in range(3)],
        "states": np.concatenate([cart[::3], grip[::3, None]], axis=1).tolist(),
        "observation.state.cartesian_position": cart.tolist(),
        "observation.state.joint_position": joints.tolist(),
        "observation.state.gripper_position": grip.tolist(),
        "action.cartesian_position": cart.tolist(),
        "action.joint_position": (joints + 0.01).tolist(),
        "action.gripper_position": grip.tolist(),
    }
    (root / "annotation" / "train").mkdir(parents=True, exist_ok=True)
    (root / "annotation" / "train" / f"{ep}.json").write_text(json.dumps(ann))
    (root / "videos" / "train" / ep).mkdir(parents=True, exist_ok=True)
    n = video_frames or T
    frames = np.zeros((n, 48, 80, 3), np.uint8)
    frames[:] = (np.arange(n) * 5 % 255)[:, None, None, None]
    for c in range(cams):
        (root / "videos" / "train" / ep / f"{c}.mp4").write_bytes(encode_mp4(frames, 5))
    return ann


def test_synthetic_episodes_with_bad_ones(tmp_path):
    root = tmp_path / "droid"
    good = write_episode(root, "0", T=12)
    write_episode(root, "1", T=12, video_frames=15)  # more video frames than annotations
    write_episode(root, "2", T=12)
    (root / "videos" / "train" / "2" / "1.mp4").write_bytes(b"")  # zero-length video
    write_episode(root, "3", T=10)
    (root / "annotation" / "train" / "3.json").write_text('{"states": [[0.1, ')  # truncated JSON
    man = main(root, tmp_path / "out", workers=2, progress=False)
    assert man["counts"] == {
        "items": 4,
        "items_ok": 2,
        "items_skipped": 2,
        "items_with_notes": 1,
        "samples": 4,
        "shards": 1,
    }
    reasons = {s["key"]: s["reason"] for s in man["skipped"]}
    assert "video of camera 1 missing or empty" in reasons["2"]
    assert "unreadable annotation" in reasons["3"]
    assert man["notes"] == [
        {
            "key": "1",
            "notes": [
                "camera 0: video has 15 frames, more than the 12 annotated: trimmed to 12",
                "camera 1: video has 15 frames, more than the 12 annotated: trimmed to 12",
            ],
        }
    ]
    samples = read_samples(tmp_path / "out")
    assert sorted(samples) == [
        "droid/0/cam0/0",
        "droid/0/cam1/0",
        "droid/1/cam0/0",
        "droid/1/cam1/0",
    ]
    for s in samples.values():
        validate_sample(s, need_frames=True)
        T = len(s["hands.npy"])
        assert T == 12 and decode_video(s["frames.mp4"]).shape[0] == 12
        check_recipe(s["hands.npy"], s["hands_valid.npy"], s["ee.npy"].astype(np.float64))
        meta = s["meta.json"]
        assert meta["embodiment"] == "gripper" and meta["fps"] == 5.0
        assert meta["keypoint_frame"] == "robot_base" and meta["hands_uv_valid"] is False
        assert meta["camera_valid"] is True and not s["camera.npy"].any()
    s = samples["droid/0/cam0/0"]
    np.testing.assert_allclose(s["ee.npy"], np.asarray(good["states"]), atol=1e-6)
    np.testing.assert_allclose(
        s["joints.npy"], np.asarray(good["action.joint_position"])[::3], atol=1e-6
    )
    assert s["ee.npy"][:, 6].min() == 0 and s["ee.npy"][:, 6].max() == pytest.approx(0.9)


def test_wrist_camera_pose_is_unknown(tmp_path):
    root = tmp_path / "droid"
    write_episode(root, "0", T=6)
    main(root, tmp_path / "out", cameras=(2,), frames="npy", progress=False)
    (s,) = read_samples(tmp_path / "out").values()
    assert s["meta.json"]["camera_valid"] is False and s["frames.npy"].shape == (6, 48, 80, 3)


# ---- the real DROID samples ---------------------------------------------------------------------


@pytest.mark.shared_data
def test_real_droid_episodes_follow_the_recipe(shared_data, tmp_path):
    root = shared_data / "robot" / "droid_subset"
    man = main(root, tmp_path, frames="npy", workers=2, progress=False)
    assert man["counts"]["items_ok"] == 7 and man["counts"]["samples"] == 14 and not man["skipped"]
    samples = read_samples(tmp_path)
    closed = 0
    for s in samples.values():
        validate_sample(s, need_frames=True)
        meta = s["meta.json"]
        ann = json.loads((root / "annotation" / "train" / f"{meta['episode_id']}.json").read_text())
        T = ann["video_length"]
        # independent of the reader: the raw 15 Hz observation fields, every 3rd sample
        ee = np.concatenate(
            [
                np.asarray(ann["observation.state.cartesian_position"])[::3][:T],
                np.asarray(ann["observation.state.gripper_position"])[::3][:T, None],
            ],
            axis=1,
        )
        assert s["hands.npy"].shape == (T, 2, 21, 3)
        np.testing.assert_allclose(s["ee.npy"], ee, atol=1e-6)
        np.testing.assert_allclose(
            s["joints.npy"], np.asarray(ann["action.joint_position"])[::3][:T], atol=1e-6
        )
        check_recipe(s["hands.npy"], s["hands_valid.npy"], ee)
        closed += int((ee[:, 6] >= 0.5).any())
        video = root / ann["videos"][meta["camera"]]["video_path"]
        assert np.array_equal(s["frames.npy"], decode_video(video))
        assert meta["intrinsics_assumed"] and meta["text"] == ann["texts"][0]
    assert closed >= 6  # both radius sets exercised (episodes 0-5 close the gripper, 6 does not)


@pytest.mark.shared_data
def test_real_episode_with_more_video_than_annotations_is_trimmed(shared_data, tmp_path):
    src = shared_data / "robot" / "droid_subset"
    root = tmp_path / "droid"
    (root / "annotation" / "train").mkdir(parents=True)
    (root / "videos" / "train").mkdir(parents=True)
    (root / "videos" / "train" / "6").symlink_to(src / "videos" / "train" / "6")
    ann = json.loads((src / "annotation" / "train" / "6.json").read_text())  # 39 frames
    for k, v in ann.items():  # keep the first 30 video-rate frames (90 raw samples)
        if (
            isinstance(v, list)
            and len(v) in (ann["video_length"], ann["raw_length"])
            and k != "texts"
        ):
            ann[k] = v[: 30 if len(v) == ann["video_length"] else 90]
    ann.update(video_length=30, state_length=30, raw_length=90)
    (root / "annotation" / "train" / "6.json").write_text(json.dumps(ann))
    ep = read_episode(root / "annotation" / "train" / "6.json", (0, 1))
    assert ep.length == 30 and ep.video_frames == {0: 39, 1: 39}
    man = main(root, tmp_path / "out", progress=False)
    assert man["counts"]["samples"] == 2 and man["notes"][0]["key"] == "6"
    assert (
        "video has 39 frames, more than the 30 annotated: trimmed to 30"
        in man["notes"][0]["notes"][0]
    )
    for s in read_samples(tmp_path / "out").values():
        assert len(s["hands.npy"]) == 30 and decode_video(s["frames.mp4"]).shape[0] == 30
        assert s["meta.json"]["notes"] == man["notes"][0]["notes"]


# ---- exports from other DROID-style setups: video-rate states / joints only ---------------------


def write_export(
    root: Path,
    ep: str,
    states: np.ndarray,
    joints: np.ndarray,
    frames: dict[int, np.ndarray],
    video_paths: bool = True,
) -> None:
    """A DROID-format episode as exports from other setups write it: `states` (T, 7) and `joints`
    (T, 8) at the video rate, no raw 15 Hz or action arrays, no fps; one mp4 per camera (5 fps)."""
    ann = {
        "texts": ["wipe the table"],
        "episode_id": ep,
        "success": 1,
        "video_length": len(states),
        "states": states.tolist(),
        "joints": joints.tolist(),
    }
    if video_paths:
        ann["videos"] = [{"video_path": f"videos/train/{ep}/{c}.mp4"} for c in range(3)]
    (root / "annotation" / "train").mkdir(parents=True, exist_ok=True)
    (root / "annotation" / "train" / f"{ep}.json").write_text(json.dumps(ann))
    for cam, f in frames.items():
        path = root / "videos" / "train" / ep / f"{cam}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_mp4(f, 5))


EXPORT_FIELDS = ["episode_id", "joints", "states", "success", "texts", "video_length"]


def check_export_sample(s: dict, states: np.ndarray, joints: np.ndarray, T: int) -> None:
    """What an export episode must become: ee = states, observed joints = joints[:, :7], commanded
    joints = the next frame's observed ones (the last frame holds), provenance in meta.json."""
    meta = s["meta.json"]
    np.testing.assert_allclose(s["ee.npy"], states[:T], atol=1e-6)
    obs = joints[:T, :7]
    np.testing.assert_allclose(np.asarray(meta["joints_observed"]), obs, atol=1e-5)
    np.testing.assert_allclose(s["joints.npy"][:-1], obs[1:], atol=1e-6)
    np.testing.assert_allclose(s["joints.npy"][-1], obs[-1], atol=1e-6)
    assert [f for f in meta["annotation_fields"] if f != "videos"] == EXPORT_FIELDS
    assert meta["ee_source"] == "states (video rate)"
    assert meta["joints_observed_source"] == "joints[:, :7] (video rate; 8 columns)"
    assert meta["joints_source"].startswith("next frame's observed joints (no action arrays)")
    assert "next frame's observed joints" in meta["actions_derived"]
    assert meta["fps_source"] == "video frame rate" and meta["fps"] == 5.0
    check_recipe(s["hands.npy"], s["hands_valid.npy"], states[:T])


def test_export_without_raw_arrays_and_one_extra_video_frame(tmp_path):
    root, T = tmp_path / "droid", 9
    rng = np.random.default_rng(3)
    states = np.concatenate(
        [rng.normal(0.4, 0.05, (T, 3)), rng.normal(0, 0.3, (T, 3)), np.linspace(0, 1, T)[:, None]],
        axis=1,
    )
    joints = np.concatenate([rng.normal(size=(T, 7)), states[:, 6:]], axis=1)  # (T, 8)
    frames = np.repeat((np.arange(T + 1) * 20)[:, None, None, None], 48, 1)
    frames = np.broadcast_to(frames, (T + 1, 48, 80, 3)).astype(np.uint8)
    # episode "a" names its videos, "b" does not (found at videos/<split>/<id>/<camera>.mp4)
    for ep, named in (("a", True), ("b", False)):
        write_export(root, ep, states, joints, {0: frames, 1: frames}, video_paths=named)
    ep = read_episode(root / "annotation" / "train" / "b.json", (0, 1))
    assert ep.length == T and ep.video_frames == {0: T + 1, 1: T + 1} and ep.fps == 5.0
    man = main(root, tmp_path / "out", frames="npy", progress=False)
    assert man["counts"]["items_ok"] == 2 and man["counts"]["samples"] == 4 and not man["skipped"]
    trim = f"video has {T + 1} frames, more than the {T} annotated: trimmed to {T}"
    assert all(trim in n for entry in man["notes"] for n in entry["notes"])
    samples = read_samples(tmp_path / "out")
    for s in samples.values():
        validate_sample(s, need_frames=True)
        check_export_sample(s, states, joints, T)
        level = s["frames.npy"].mean(axis=(1, 2, 3)) / 20  # frame k is grey level 20 k
        np.testing.assert_allclose(level, np.arange(T), atol=0.2)  # the first T frames


@pytest.mark.shared_data
def test_real_episodes_as_exports_are_read(shared_data, tmp_path):
    """The real DROID episodes rewritten as another setup exports them: only `states` and
    `joints` (observed arm joints + gripper, every 3rd raw sample), videos one frame longer. All are
    written (the reader used to reject every one with KeyError), with the states and joints of the
    original episodes and the first T frames of each video."""
    src = shared_data / "robot" / "droid_subset"
    root, truth = tmp_path / "export", {}
    for path in sorted((src / "annotation" / "train").glob("*.json")):
        ann = json.loads(path.read_text())
        T = ann["video_length"]
        obs = np.asarray(ann["observation.state.joint_position"])[::3][:T]
        grip = np.asarray(ann["observation.state.gripper_position"])[::3][:T, None]
        states, joints = np.asarray(ann["states"]), np.concatenate([obs, grip], axis=1)
        video = decode_video(src / ann["videos"][0]["video_path"])  # (T, 192, 320, 3)
        frames = np.concatenate([video, video[-1:] // 2])  # + 1 frame
        write_export(root, path.stem, states, joints, {0: frames})
        truth[path.stem] = (states, joints, T)
    man = main(root, tmp_path / "out", cameras=(0,), frames="npy", workers=2, progress=False)
    assert man["counts"]["items_ok"] == 7 and man["counts"]["samples"] == 7 and not man["skipped"]
    for s in read_samples(tmp_path / "out").values():
        states, joints, T = truth[s["meta.json"]["episode_id"]]
        assert len(s["frames.npy"]) == T
        check_export_sample(s, states, joints, T)
        exported = decode_video(root / "videos" / "train" / s["meta.json"]["episode_id"] / "0.mp4")
        np.testing.assert_array_equal(s["frames.npy"], exported[:T])
