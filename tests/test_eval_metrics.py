"""Evaluation units: metrics on hand-made tensors, the PCK denominator, aggregation weights, the
baselines' definitions, keypoint read-out, encoder identity checks."""

import math

import pytest
import torch

from dexwm.data.actions import ACTION_DIM, HAND_DIMS
from dexwm.evaluation import baselines as bl
from dexwm.evaluation.data import check_encoder, crop_frames, keypoints_in_input
from dexwm.evaluation.metrics import (
    Accumulator,
    feature_errors,
    pck_counts,
    scaled_thresholds,
)
from dexwm.evaluation.probe import probe_loss, refined_argmax
from dexwm.models.hand_head import render_heatmaps


def test_feature_errors_known_values():
    true = torch.zeros(1, 2, 3, 4)  # (B, H, N, D)
    true[..., 0] = 1.0  # every token = e0
    pred = true.clone()
    pred[0, 1] = torch.tensor([0.0, 2.0, 0.0, 0.0])  # step 2: every token = 2 e1
    e = feature_errors(pred, true)
    assert e["feat_mae"].shape == (1, 2)
    torch.testing.assert_close(e["feat_mae"], torch.tensor([[0.0, 0.75]]))  # (1 + 2) / 4
    torch.testing.assert_close(e["feat_mse"], torch.tensor([[0.0, 1.25]]))  # (1 + 4) / 4
    torch.testing.assert_close(e["cosine"], torch.tensor([[1.0, 0.0]]))  # identical; orthogonal
    e = feature_errors(-true, true)
    torch.testing.assert_close(e["cosine"], torch.tensor([[-1.0, -1.0]]))


def test_pck_counts_only_visible_keypoints():
    true = torch.zeros(1, 1, 4, 2)  # (B, H, K, 2)
    pred = torch.tensor(
        [[[[1.0, 0.0], [3.0, 4.0], [100.0, 0.0], [0.0, 0.5]]]]
    )  # dist 1, 5, 100, .5
    vis = torch.tensor([[[True, True, True, False]]])
    true[0, 0, 3] = float("nan")  # an invisible point may be NaN: ignored
    hits, den = pck_counts(pred, true, vis, [0.9, 1.0, 5.0, 200.0])
    assert den.tolist() == [[3]]  # the invisible (and close) 4th point is not counted
    assert hits.tolist() == [[[0, 1, 2, 3]]]  # thresholds inclusive


def test_pck_aggregation_weights_visible_keypoints_not_clips():
    acc = Accumulator(horizon=1, thresholds_px=[1.0])
    groups = [["all"], ["all"]]
    # clip 1: 1 visible point, hit; clip 2: 3 visible, none hit -> PCK 1/4 (a clip mean would give 1/2)
    acc.add_pck(groups, "m", torch.tensor([[[1]], [[0]]]), torch.tensor([[1], [3]]))
    acc.add_pck([["none"]], "m", torch.tensor([[[0]]]), torch.tensor([[0]]))  # nothing visible
    r = acc.result()
    assert r["all"]["m"]["pck"]["1.000"] == [0.25]
    assert r["all"]["m"]["pck_visible"] == [4]
    assert r["none"]["m"]["pck"]["1.000"] == [None]  # no denominator: no number, not 0


def test_feature_aggregation_mean_se_and_paired_difference():
    acc = Accumulator(horizon=2, thresholds_px=[])
    model = {"feat_mae": torch.tensor([[1.0, 2.0], [3.0, 4.0]])}
    base = {"feat_mae": torch.tensor([[2.0, 2.0], [5.0, 4.0]])}
    acc.add_features([["a", "all"], ["b", "all"]], "model", model)
    acc.add_features([["a", "all"], ["b", "all"]], "base", base, reference=model)
    r = acc.result()
    assert r["all"]["model"]["feat_mae"] == [2.0, 3.0]
    assert r["a"]["model"]["feat_mae"] == [1.0, 2.0] and r["a"]["model"]["clips"] == 1
    assert r["all"]["model"]["feat_mae_se"][0] == pytest.approx(math.sqrt(2.0) / math.sqrt(2))
    assert r["all"]["base"]["feat_mae_diff"] == [1.5, 0.0]


def test_pck_thresholds_scale_with_the_frame():
    assert scaled_thresholds([2.5, 20], (224, 392)) == pytest.approx([2.5, 20])
    assert scaled_thresholds([2.5, 20], (112, 196)) == pytest.approx([1.25, 10])
    d = math.hypot(128, 128) / math.hypot(224, 392)
    assert scaled_thresholds([10], (128, 128)) == pytest.approx([10 * d])


def _batch(B=3, C=2, H=4, N=5, D=6):
    raw = torch.randn(B, C + H, N, D)
    actions = torch.randn(B, C + H - 1, ACTION_DIM)
    actions[..., -2:] = torch.tensor([0.0, 1.0])  # left hand unknown, right hand known
    return bl.Batch(raw, raw * 2, actions, torch.full((B, C + H - 1), 0.2), C)


def test_copy_last_is_the_last_context_frame_at_every_step():
    b = _batch()
    out = bl.copy_last(b)
    assert out.shape == b.truth.shape
    for h in range(out.shape[1]):
        torch.testing.assert_close(out[:, h], b.feats[:, b.context - 1])
    # and its error is exactly that of the last context frame against each future frame
    err = feature_errors(out, b.truth)["feat_mae"]
    want = (b.feats[:, b.context :] - b.feats[:, b.context - 1 : b.context]).abs().mean((-1, -2))
    torch.testing.assert_close(err, want)


def test_shuffled_actions_come_from_other_clips():
    g = torch.Generator().manual_seed(0)
    for n in (2, 3, 7, 16):
        for _ in range(20):
            p = bl.derangement(n, g)
            assert sorted(p.tolist()) == list(range(n)) and (p != torch.arange(n)).all()
    acts = torch.arange(3.0)[:, None, None].expand(3, 4, ACTION_DIM)
    out = bl.shuffled_actions(acts, g)
    assert (out[:, 0, 0] != torch.arange(3.0)).all()
    one = acts[:1]
    assert bl.shuffled_actions(one, g) is None  # nothing to borrow from
    torch.testing.assert_close(bl.shuffled_actions(one, g, donor=acts[2]), acts[2:3])


def test_zero_actions_keep_the_hand_known_flags():
    b = _batch()
    z = bl.zero_actions(b.future_actions)
    assert (z[..., : HAND_DIMS + 6] == 0).all()
    torch.testing.assert_close(z[..., -2:], b.future_actions[..., -2:])


def test_refined_argmax_finds_subpixel_peaks():
    uv = torch.tensor([[[10.3, 20.7], [40.0, 5.5]]])  # (1, K, 2) continuous pixels
    logits = render_heatmaps(uv, (32, 48), sigma=1.5).clamp(min=1e-8).log()  # log-Gaussian
    got = refined_argmax(logits)
    torch.testing.assert_close(got, uv, atol=1e-3, rtol=0)
    # the probe loss is smallest when the logits put the peak at the target
    vis = torch.ones(1, 2, dtype=torch.bool)
    assert probe_loss(logits, uv, vis, 1.5) < probe_loss(logits.flip(-1), uv, vis, 1.5)


def test_keypoints_in_input_crop_and_visibility():
    uv = torch.zeros(1, 2, 21, 2)
    uv[0, 1, :, 0], uv[0, 1, :, 1] = 150.0, 64.0  # right hand at x=150 of a 128x256 frame
    uv[0, 1, 4, 0] = 10.0  # its thumb tip near the left edge: cropped away by a 128x128 centre crop
    vis_hands = torch.tensor([[False, True]])
    k, vis = keypoints_in_input(uv, vis_hands, (128, 256), (128, 128))
    assert k.shape == (1, 12, 2) and vis.shape == (1, 12)
    assert not vis[0, :6].any()  # left hand not valid
    assert vis[0, 6:].tolist() == [True, False, True, True, True, True]
    torch.testing.assert_close(k[0, 6], torch.tensor([150.0 - 64, 64.0]))
    frames = torch.randint(0, 255, (2, 128, 256, 3), dtype=torch.uint8)
    px = crop_frames(frames, (128, 128), (64, 64))
    assert px.shape == (2, 3, 64, 64) and 0 <= float(px.min()) and float(px.max()) <= 1


def test_encoder_identity_check():
    enc = {"name": "timm:a", "input_size": [128, 128], "checksum": "x1"}
    check_encoder(enc, dict(enc), "here")
    check_encoder(enc, None, "here")  # features computed from frames: nothing to check
    with pytest.raises(ValueError, match="weights x2"):
        check_encoder(enc, dict(enc, checksum="x2"), "here")
    with pytest.raises(ValueError, match="come from encoder timm:b"):
        check_encoder(enc, dict(enc, name="timm:b"), "here")
    with pytest.raises(ValueError, match=r"at \[224, 224\]"):
        check_encoder(enc, dict(enc, input_size=[224, 224]), "here")


def test_eval_config_from_yaml_plus_overrides():
    from pathlib import Path

    from dexwm.evaluation import eval_config

    tiny = Path(__file__).resolve().parents[1] / "configs/eval/tiny.yaml"
    cfg = eval_config(tiny, checkpoint="m.ckpt", data=[{"paths": ["a"]}], probe={"steps": 5})
    assert cfg.max_clips == 64 and cfg.horizon == 20 and cfg.step_s == 0.2  # preset + defaults
    assert cfg.probe.steps == 5 and cfg.probe.scale == 0.5  # override merged into the preset
    assert cfg.data[0].paths == ["a"]
    assert eval_config(cfg, horizon=3).horizon == 3
    with pytest.raises(ValueError, match="missing required \\['checkpoint'\\]"):
        eval_config(tiny, data=[{"paths": ["a"]}])
