"""Predictor shapes and masks, rollout equivalences, actions, normalisers, hand heatmap loss."""

import math

import numpy as np
import pytest
import torch

from dexwm.data.actions import ACTION_DIM, keypoint_actions
from dexwm.embodiment import euler_xyz_to_matrix, gripper_keypoints
from dexwm.models.hand_head import (
    HandHead,
    HandHeadConfig,
    hand_heatmap_loss,
    heatmap_targets,
    render_heatmaps,
)
from dexwm.models.losses import hand_loss
from dexwm.models.normalizer import Normalizer
from dexwm.models.predictor import Predictor, PredictorConfig


def make_predictor(max_frames=4, residual=True, seed=0):
    torch.manual_seed(seed)
    m = Predictor(
        32,
        6,
        10,
        PredictorConfig(dim=64, depth=2, heads=4, max_frames=max_frames, residual=residual),
    )
    for p in m.parameters():  # leave the zero init so every path (gates, head) carries signal
        torch.nn.init.normal_(p, std=0.1)
    return m.eval()


def inputs(B=3, T=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(B, T + 1, 6, 32, generator=g),
        torch.randn(B, T, 10, generator=g),
        torch.rand(B, T, generator=g),
    )


def test_zero_init_predicts_copy_or_zero():
    f, a, dt = inputs()
    m = Predictor(32, 6, 10, PredictorConfig(dim=64, depth=2, heads=4, max_frames=4))
    torch.testing.assert_close(m(f, a, dt), f[:, :4])  # residual: starts as copy-last-frame
    m = Predictor(
        32, 6, 10, PredictorConfig(dim=64, depth=2, heads=4, max_frames=4, residual=False)
    )
    assert m(f, a, dt).abs().max() == 0  # DexWM: zero-initialised output layer


@pytest.mark.parametrize("t", [0, 1, 2])
def test_block_causal_no_peeking(t):
    """Perturbing frame t+1 and action t+1 never changes predictions for frames <= t+1."""
    m = make_predictor()
    f, a, dt = inputs()
    out = m(f, a, dt)
    f2, a2, dt2 = f.clone(), a.clone(), dt.clone()
    f2[:, t + 1] += 3.0
    a2[:, t + 1 :] += 3.0
    dt2[:, t + 1 :] += 1.0
    out2 = m(f2, a2, dt2)
    assert out.shape == (3, 4, 6, 32)
    torch.testing.assert_close(out2[:, : t + 1], out[:, : t + 1])  # predictions of frames 1..t+1
    assert (out2[:, t + 1] - out[:, t + 1]).abs().max() > 1e-3  # the perturbed frame matters after


def test_action_and_time_gap_condition_the_prediction():
    m = make_predictor()
    f, a, dt = inputs()
    base = m(f, a, dt)
    assert (m(f, a + 1, dt) - base).abs().max() > 1e-3
    assert (m(f, a, dt + 0.5) - base).abs().max() > 1e-3


def test_rollout_matches_teacher_forcing_and_shares_context():
    m = make_predictor(max_frames=4)
    f, a, dt = inputs(T=4)
    C, H = 2, 3
    with torch.no_grad():
        roll = m.rollout(
            f[:, :C],
            a[:, : C - 1],
            dt[:, : C - 1],
            a[:, C - 1 : C - 1 + H],
            dt[:, C - 1 : C - 1 + H],
        )
        tf = m(f, a, dt)
        # step 0 is a teacher-forced prediction from true frames
        torch.testing.assert_close(roll[:, 0], tf[:, C - 1], atol=1e-5, rtol=1e-5)
        # later steps = teacher forcing fed with the model's own predictions
        frames = f[:, :C]
        for _ in range(H):
            n = frames.shape[1]
            nxt = m(torch.cat([frames, frames[:, -1:]], 1), a[:, :n], dt[:, :n])[:, -1:]
            frames = torch.cat([frames, nxt], 1)
        torch.testing.assert_close(roll, frames[:, C:], atol=1e-5, rtol=1e-5)
        # one shared context (batch 1) gives what an expanded copy gives
        shared = m.rollout(
            f[:1, :C], a[:1, : C - 1], dt[:1, : C - 1], a[:, C - 1 :], dt[:, C - 1 :]
        )
        copied = m.rollout(
            f[:1, :C].expand(3, -1, -1, -1), a[:1, : C - 1].expand(3, -1, -1), dt[:1, : C - 1].expand(3, -1),
            a[:, C - 1 :], dt[:, C - 1 :],
        )  # fmt: skip
        torch.testing.assert_close(shared, copied, atol=1e-5, rtol=1e-5)


def test_rollout_slides_window_beyond_max_frames():
    m = make_predictor(max_frames=3)
    f, a, dt = inputs(T=3)
    H = 6
    g = torch.Generator().manual_seed(5)
    acts, gaps = torch.randn(3, H, 10, generator=g), torch.rand(3, H, generator=g)
    with torch.no_grad():
        roll = m.rollout(f[:, :2], a[:, :1], dt[:, :1], acts, gaps)
        frames, A, D = list(f[:, :2].unbind(1)), [a[:, 0]], [dt[:, 0]]
        for s in range(H):
            A.append(acts[:, s])
            D.append(gaps[:, s])
            win = torch.stack(frames[-3:], 1)
            n = win.shape[1]
            out = m(
                torch.cat([win, win[:, -1:]], 1), torch.stack(A[-n:], 1), torch.stack(D[-n:], 1)
            )[:, -1]
            frames.append(out)
    torch.testing.assert_close(roll, torch.stack(frames[2:], 1), atol=1e-5, rtol=1e-5)


def test_rollout_has_gradients_for_multistep_loss():
    m = make_predictor().train()
    f, a, dt = inputs()
    a = a.requires_grad_()
    out = m.rollout(f[:, :1], a[:, :0], dt[:, :0], a[:, :3], dt[:, :3])
    out.sum().backward()
    assert a.grad is not None and a.grad.abs().sum() > 0
    assert m.blocks[0].qkv.weight.grad is not None


def test_too_many_frames_rejected():
    m = make_predictor(max_frames=2)
    f, a, dt = inputs(T=3)
    with pytest.raises(ValueError, match="exceed max_frames=2"):
        m(f, a, dt)


def test_normalizer_round_trip_and_constant_dims():
    n = Normalizer(ACTION_DIM)
    x = torch.randn(500, ACTION_DIM) * torch.linspace(0.001, 2, ACTION_DIM) + 3
    x[:, :63] = 0.0  # e.g. a left hand that never appears
    n.set_stats(x.mean(0), x.std(0))
    z = n(x)
    torch.testing.assert_close(n.inverse(z), x, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(z[:, 63:].std(0), torch.ones(ACTION_DIM - 63), atol=0.02, rtol=0)
    assert torch.isfinite(n(torch.ones(1, ACTION_DIM))).all()  # constant dims are not divided by ~0
    with pytest.raises(ValueError, match="NaN"):
        n.set_stats(torch.full((ACTION_DIM,), float("nan")), torch.ones(ACTION_DIM))


def test_actions_from_keypoints():
    T = 5
    rng = np.random.default_rng(0)
    hands = torch.tensor(rng.normal(size=(T, 2, 21, 3)), dtype=torch.float32)
    valid = torch.ones(T, 2, dtype=torch.bool)
    valid[2, 0] = False  # left hand lost in frame 2
    a = keypoint_actions(hands, valid)
    assert a.shape == (T - 1, ACTION_DIM)
    torch.testing.assert_close(a[0, 63:126], (hands[1, 1] - hands[0, 1]).flatten())
    assert a[1, :63].abs().sum() == 0 and a[2, :63].abs().sum() == 0  # unknown motion -> 0 ...
    assert a[1, 132] == 0 and a[2, 132] == 0 and a[3, 132] == 1  # ... and flagged as unknown
    assert (a[:, 133] == 1).all() and (a[:, 126:132] == 0).all()


def test_actions_with_moving_camera_cancel_camera_motion():
    """Points fixed in the world seen from a moving camera: zero hand motion in the frame of the
    first camera; the camera motion shows up in the camera dims."""
    T = 4
    rng = np.random.default_rng(1)
    world = rng.normal(size=(2, 21, 3)) + [0, 0, 2]
    cam = np.concatenate([rng.normal(size=(T, 3)) * 0.1, rng.normal(size=(T, 3)) * 0.2], -1)
    R = euler_xyz_to_matrix(cam[:, 3:])
    hands = np.stack([(world - cam[t, :3]) @ R[t] for t in range(T)])  # camera-frame points
    a = keypoint_actions(torch.tensor(hands), torch.ones(T, 2, dtype=torch.bool), torch.tensor(cam))
    assert a[:, :126].abs().max() < 1e-5
    assert a[:, 126:132].abs().max() > 1e-3
    assert (a[:, 129:132].abs() <= math.pi).all()


def test_gripper_mapping_follows_dexwm_recipe():
    ee = np.array([[0.5, 0.1, 0.3], [0.5, 0.1, 0.3]])
    kp = gripper_keypoints(ee, np.array([0.0, 1.0]))  # open, closed
    assert kp.shape == (2, 21, 3)
    np.testing.assert_allclose(kp[:, 0], ee)
    np.testing.assert_allclose(kp[:, 1:, 2], 0.3)  # same height as the end effector
    r = np.linalg.norm(kp[:, 1:, :2] - ee[:, None, :2], axis=-1).reshape(2, 5, 4)
    np.testing.assert_allclose(r[0], np.tile([0.03, 0.04, 0.05, 0.06], (5, 1)), atol=1e-9)
    np.testing.assert_allclose(r[1], np.tile([0.03, 0.04, 0.035, 0.03], (5, 1)), atol=1e-9)
    d = kp[0, 1::4] - ee[0]  # first joint of each finger
    ang = np.arctan2(d[:, 1], d[:, 0])  # one angle per finger
    np.testing.assert_allclose(
        np.sort(np.mod(ang, 2 * np.pi)), 2 * np.pi * np.arange(5) / 5, atol=1e-9
    )


def test_hand_loss_masks_invisible_hands():
    H, W = 32, 48
    uv = torch.tensor([[[10.0, 12.0]] * 6 + [[30.0, 20.0]] * 6])  # (1, 12, 2)
    perfect = render_heatmaps(uv, (H, W), 2.0)
    vis = torch.ones(1, 12, dtype=torch.bool)
    assert hand_heatmap_loss(perfect, uv, vis, 2.0) == 0
    garbage = perfect.clone()
    garbage[:, 6:] = 5.0  # the right hand's maps are wrong ...
    assert hand_heatmap_loss(garbage, uv, vis, 2.0) > 1.0
    vis[:, 6:] = False  # ... but that hand is not visible: no loss
    assert hand_heatmap_loss(garbage, uv, vis, 2.0) == 0
    vis[:] = False
    assert hand_heatmap_loss(garbage, uv, vis, 2.0) == 0  # clips without hands: nothing


def test_heatmap_targets_visibility_and_loss_wiring():
    hands_uv = torch.zeros(2, 3, 2, 21, 2)
    hands_uv[..., 0] = 5.0
    hands_uv[..., 1] = 6.0
    hands_uv[0, 0, 1, 8] = torch.tensor([100.0, 6.0])  # right index tip outside a 32x48 map
    valid = torch.tensor([[True, True]] * 3 + [[False, False]] * 3).view(2, 3, 2)
    uv, vis = heatmap_targets(hands_uv, valid, (32, 48))
    assert uv.shape == (2, 3, 12, 2) and vis.shape == (2, 3, 12)
    assert vis[0, 0].tolist() == [True] * 6 + [True, True, False, True, True, True]
    assert not vis[1].any()
    pred = render_heatmaps(uv, (32, 48), 2.0)  # (2, 3, 12, 32, 48)
    assert hand_loss(pred, hands_uv, valid, 2.0) < 1e-6


def test_hand_head_output_size():
    head = HandHead(320, (4, 4), (128, 128), HandHeadConfig(dim=32, depth=1, heads=2))
    assert head(torch.randn(5, 16, 320)).shape == (5, 12, 128, 128)
    head = HandHead(1024, (16, 28), (224, 392), HandHeadConfig(dim=32, depth=1, heads=2))
    assert head(torch.randn(1, 448, 1024)).shape == (1, 12, 224, 392)


def test_static_camera_fast_path_equals_general_actions():
    from dexwm.data.actions import keypoint_actions_static

    rng = np.random.default_rng(3)
    hands = rng.normal(size=(6, 2, 21, 3)).astype(np.float32)
    valid = rng.random((6, 2)) > 0.3
    ref = keypoint_actions(torch.from_numpy(hands), torch.from_numpy(valid))
    np.testing.assert_allclose(keypoint_actions_static(hands, valid), ref.numpy(), atol=1e-6)
