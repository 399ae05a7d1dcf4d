"""Off-frame keypoints: a valid hand partly cropped out of the stored frame. Its cropped-out points
are counted (meta.json, manifest), masked per keypoint in the hand loss, the probe's data and PCK,
and the "hands" crop and letterboxing keep them in frame."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from test_hands import toy_hand
from test_human_video import moving_squares

from dexwm.data.clips import ClipConfig, build_clip
from dexwm.data.loader import DataSource
from dexwm.data.schema import in_frame, validate_sample
from dexwm.data.shards import record_notes, run_shard_job
from dexwm.data.video import encode_mp4
from dexwm.embodiment import project
from dexwm.evaluation.data import collect_frames, keypoints_in_input
from dexwm.evaluation.metrics import pck_counts
from dexwm.evaluation.probe import probe_loss
from dexwm.keypoints import HEATMAP_POINTS, LEFT, RIGHT
from dexwm.prep.hand_fit import (
    frame_geometry,
    hands_crop,
    intrinsics_from_fov,
    transform_intrinsics,
    transform_uv,
)
from dexwm.prep.hands import HandTrack
from dexwm.prep.human_video import DetectedClip, HumanVideoConfig, clip_to_samples

DET = (640, 360)  # a portrait clip (height, width) as the detector saw it
SIZE = (112, 196)  # stored frames: landscape, as the default 224 x 392
T, SEG = 20, 10


def portrait_clip(crop: str) -> tuple[DetectedClip, HumanVideoConfig]:
    """A right hand that starts in the middle of a portrait frame and moves down out of the
    centre band (which is all a landscape centre crop keeps), geometry per segment as
    detect_clip chooses it."""
    K = intrinsics_from_fov(*DET, 60)
    world = toy_hand()
    track = HandTrack.empty(T, DET)
    for t in range(T):
        R = Rotation.from_euler("xyz", [0.05 * t, 0.2, 0.0]).as_matrix()
        track.uv[t, RIGHT] = project(world @ R.T + [0.0, 0.012 * t, 0.5], K)  # down 0.6 m/s
        track.world[t, RIGHT], track.valid[t, RIGHT], track.score[t, RIGHT] = world, True, 0.9
    cfg = HumanVideoConfig(size=SIZE, segment_frames=SEG, crop=crop, frames="npy")
    chunks = [np.arange(a, a + SEG) for a in range(0, T, SEG)]
    geoms = [frame_geometry(crop, DET, SIZE, track.uv[c], track.valid[c]) for c in chunks]
    videos = [moving_squares(SEG, *SIZE, seed=k) for k in range(len(chunks))]
    dc = DetectedClip("portrait.mp4", 10.0, 10.0, K, geoms, chunks, videos, track, {}, [])
    return dc, cfg


def off_frame_truth(dc: DetectedClip) -> int:
    """Keypoints outside the stored frame, counted from the detections and the crop alone."""
    n = 0
    for k, c in enumerate(dc.chunks):
        uv = transform_uv(dc.track.uv[c, RIGHT].astype(np.float64), dc.geom[k])
        n += int((~in_frame(uv, SIZE)).sum())
    return n


def test_centre_crop_counts_and_hands_crop_or_letterbox_keep_the_points(tmp_path):
    found = {}
    for crop in ("center", "hands", "letterbox"):
        dc, cfg = portrait_clip(crop)
        samples = clip_to_samples(dc, cfg, "portrait.mp4", "portrait_mp4")
        total = sum(s["meta.json"]["off_frame"]["keypoints_off_frame"] for s in samples)
        assert total == off_frame_truth(dc)
        found[crop] = total
        for s in samples:  # the crop and the intrinsics move together
            validate_sample(s, need_frames=True)
            K = np.asarray(s["meta.json"]["intrinsics"])
            np.testing.assert_allclose(
                s["hands_uv.npy"][:, RIGHT], project(s["hands.npy"][:, RIGHT], K), atol=0.05
            )
            assert s["meta.json"]["crop"] == crop
        # shards + manifest: the count of cropped-out points per input and in total
        out = tmp_path / crop
        run_shard_job([("portrait.mp4", (dc, cfg))], _samples, out, config={}, progress=False)
        man = record_notes(out)
        assert man["counts"]["keypoints_off_frame"] == total
        assert man["counts"]["valid_hands"] == T and man["counts"]["valid_keypoints"] == 21 * T
    assert found["center"] > 100  # the hand leaves the centre band
    assert found["hands"] < found["center"] // 4 and found["letterbox"] == 0
    man = record_notes(tmp_path / "center")
    assert man["off_frame"][0]["key"] == "portrait.mp4"
    assert man["off_frame"][0]["keypoints_off_frame"] == found["center"]


def _samples(payload):
    dc, cfg = payload
    return clip_to_samples(dc, cfg, "portrait.mp4", "portrait_mp4")


def test_hands_crop_slides_the_window_to_the_keypoints():
    uv = np.zeros((3, 2, 21, 2))
    uv[..., 0], uv[..., 1] = 180.0, np.linspace(560, 630, 21)  # low in a 640 x 360 frame
    valid = np.zeros((3, 2), bool)
    valid[:, RIGHT] = True
    sy, sx, top, left = hands_crop(DET, SIZE, uv, valid)
    inside = in_frame(transform_uv(uv[valid], (sy, sx, top, left)), SIZE)
    assert left == 0 and top > 0 and inside.all()
    assert (
        hands_crop(DET, SIZE, uv, np.zeros_like(valid))[2] == frame_geometry("center", DET, SIZE)[2]
    )


@pytest.fixture(scope="module")
def centre_sample() -> dict:
    """The centre-crop portrait sample whose hand leaves the frame (decoded, as the loader has it)."""
    dc, cfg = portrait_clip("center")
    return clip_to_samples(dc, cfg, "portrait.mp4", "portrait_mp4")[1]


def test_clip_masks_each_cropped_out_keypoint(centre_sample):
    s = centre_sample
    cfg = ClipConfig(num_frames=SEG, mode="fixed")
    clip = build_clip(s, np.arange(SEG), cfg, np.random.default_rng(0))
    kv = clip["keypoints_visible"]  # (T, 2, 21)
    uv = s["hands_uv.npy"]
    H, W = SIZE
    truth = (uv[..., 0] >= 0) & (uv[..., 0] < W) & (uv[..., 1] >= 0) & (uv[..., 1] < H)
    truth &= s["hands_valid.npy"][..., None]
    assert kv.shape == (SEG, 2, 21) and np.array_equal(kv, truth)
    assert not kv[:, LEFT].any() and 0 < kv[:, RIGHT].sum() < kv[:, RIGHT].size
    assert clip["hands_visible"][:, RIGHT].all()  # the hand itself stays valid (3D is right)


def test_hand_loss_uses_the_per_keypoint_mask():
    """The training loss: a keypoint marked not visible (here one inside the frame) contributes
    nothing wherever it is; the per-hand mask alone would train on it."""
    from dexwm.models.hand_head import HandHeadConfig
    from dexwm.models.predictor import PredictorConfig
    from dexwm.training.module import WorldModelModule

    torch.manual_seed(0)
    module = WorldModelModule(
        predictor=PredictorConfig(dim=32, depth=1, heads=2, max_frames=2),
        hand_head=HandHeadConfig(dim=32, depth=1, heads=2, scale=0.5),
        feature_norm=False,
    )
    torch.nn.init.normal_(module.wm.hand_head.out.weight, std=0.5)  # heatmaps that are not flat
    uv = torch.full((1, 2, 2, 21, 2), 40.0)
    uv[..., 1] = torch.linspace(20, 100, 21)
    kv = torch.zeros(1, 2, 2, 21, dtype=torch.bool)
    kv[:, :, RIGHT] = True
    kv[:, :, RIGHT, 8] = False  # e.g. cropped out
    batch = {
        "feats": torch.randn(1, 2, 16, 320),
        "actions": torch.zeros(1, 1, 134),
        "dt": torch.full((1, 1), 0.1),
        "hands_uv": uv,
        "hands_visible": kv.any(-1),
        "keypoints_visible": kv,
        "frame_hw": torch.tensor([[128, 128]]),
    }
    with torch.no_grad():
        loss = module.compute_losses(batch)["hand"]
        moved = dict(batch, hands_uv=uv.clone())
        moved["hands_uv"][:, :, RIGHT, 8] = torch.tensor([110.0, 15.0])
        assert module.compute_losses(moved)["hand"] == loss  # masked: wherever it is
        per_hand = {k: v for k, v in moved.items() if k != "keypoints_visible"}
        assert module.compute_losses(per_hand)["hand"] != loss  # unmasked, it would count
    assert HEATMAP_POINTS.index(8) == 2  # index tip: one of the 12 supervised points


def test_probe_data_and_pck_skip_cropped_out_keypoints(centre_sample, tmp_path):
    """The probe's training frames and PCK's truth both come from keypoints_in_input: a cropped-out
    keypoint is not visible there, so the probe never learns it and PCK never counts it."""
    s = centre_sample
    run_shard_job([("a", s)], lambda x: [x], tmp_path, config={}, progress=False)
    input_size = (64, 112)  # an encoder input of the stored frames' aspect
    data = collect_frames(
        [DataSource([str(tmp_path)])], input_size, {}, encode=lambda f: torch.zeros(len(f), 4, 8)
    )
    uv_in = transform_uv(
        s["hands_uv.npy"][:, RIGHT][:, list(HEATMAP_POINTS)],
        (input_size[0] / SIZE[0], input_size[1] / SIZE[1], 0, 0),
    )  # (T, 6, 2): same aspect, so a pure scale
    truth = in_frame(uv_in, input_size)  # (T, 6)
    keep = truth.any(-1)
    assert 0 < keep.sum() < SEG and not truth.all()
    np.testing.assert_array_equal(data["visible"][:, 6:].numpy(), truth[keep])
    assert not data["visible"][:, :6].any()  # no left hand
    # the probe's loss: invisible targets do not matter
    logits = torch.randn(len(data["uv"]), 12, *input_size)
    moved = data["uv"].clone()
    moved[~data["visible"]] = 3.0
    assert probe_loss(logits, moved, data["visible"], 2.0) == probe_loss(
        logits, data["uv"], data["visible"], 2.0
    )
    # PCK: exact predictions where visible, wild ones elsewhere -> 100 %, over visible points only
    uv, vis = keypoints_in_input(
        torch.from_numpy(s["hands_uv.npy"]),
        torch.from_numpy(s["hands_valid.npy"]),
        SIZE,
        input_size,
    )
    pred = torch.where(vis[..., None], uv, torch.full_like(uv, -50.0))
    hits, denom = pck_counts(pred, uv, vis, [1.0])
    assert torch.equal(hits[:, 0], denom) and int(denom.sum()) == int(truth.sum())


def test_portrait_frames_are_stored_as_the_geometry_says():
    """Letterboxing pastes the whole frame between black bars; the hands crop moves the window."""
    from dexwm.prep.hand_fit import resize_crop

    frame = np.zeros((1, *DET, 3), np.uint8)
    frame[0, 600:620, 170:190] = 255  # a white square low in the frame
    for crop in ("letterbox", "hands"):
        uv = np.full((1, 2, 21, 2), [180.0, 610.0])
        valid = np.array([[False, True]])
        geom = frame_geometry(crop, DET, SIZE, uv, valid)
        out = resize_crop(frame, SIZE, geom)[0]
        v, u = np.argwhere(out[..., 0] > 128).mean(0) + 0.5
        np.testing.assert_allclose([u, v], transform_uv(np.array([180.0, 610.0]), geom), atol=1.0)
    K = transform_intrinsics(intrinsics_from_fov(*DET), frame_geometry("letterbox", DET, SIZE))
    assert K[0, 2] == pytest.approx(SIZE[1] / 2, abs=0.5)  # principal point still centred
    assert encode_mp4(resize_crop(frame, SIZE, geom), 10)  # even-sized, encodable


@pytest.mark.shared_data
def test_real_portrait_clip_centre_crop_hands_crop_letterbox(shared_data, tmp_path):
    """teddy.mp4 (368 x 480, portrait, both hands): the centre crop to a landscape frame cuts many
    valid hands; the hands crop keeps most of their points, letterboxing all. Detection happens
    before the crop, so every mode has the same valid hands."""
    from data_prep.human_video import main

    clip = shared_data / "human_video" / "cotracker_handheld_objects" / "teddy.mp4"
    counts = {}
    for crop in ("center", "hands", "letterbox"):
        man = main(clip, tmp_path / crop, fps=5, size=SIZE, detect_max_side=480, crop=crop,
                   progress=False)  # fmt: skip
        counts[crop] = man["counts"]
        print(crop, {k: man["counts"][k] for k in ("valid_hands", "hands_partly_off_frame",
                                                      "valid_keypoints", "keypoints_off_frame")})  # fmt: skip
    c, h, lb = counts["center"], counts["hands"], counts["letterbox"]
    assert c["valid_hands"] == h["valid_hands"] == lb["valid_hands"] >= 20
    assert c["hands_partly_off_frame"] >= c["valid_hands"] // 4
    assert h["keypoints_off_frame"] <= c["keypoints_off_frame"] // 4
    assert lb["keypoints_off_frame"] == 0
