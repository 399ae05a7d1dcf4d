"""Evaluation end to end on tiny real shards: a tiny model trained for a few steps, then run_eval
(Python entry) and eval.py (CLI + YAML) write the JSON, the Markdown table, plots and pictures;
numbers checked against their definitions; bad input fails early and clearly."""

import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import webdataset as wds

from dexwm.data.clips import ClipConfig
from dexwm.data.datamodule import ShardDataModule
from dexwm.data.feature_cache import cache_features
from dexwm.data.loader import DataSource
from dexwm.data.synthetic import make_episode, write_synthetic
from dexwm.evaluation import EvalConfig, run_eval
from dexwm.evaluation.pixel_decoder import DecoderConfig
from dexwm.evaluation.probe import ProbeConfig
from dexwm.models.encoders import EncoderSpec, FrozenEncoder
from dexwm.models.hand_head import HandHeadConfig
from dexwm.models.predictor import PredictorConfig
from dexwm.models.world_model import WorldModel
from dexwm.training.module import WorldModelModule

SPEC = EncoderSpec().to_dict()

ROOT = Path(__file__).resolve().parents[1]
C, H = 3, 3  # context = the tiny model's window; test episodes have exactly C + H frames


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    write_synthetic(root / "raw_train", episodes=8, T=10, items_per_shard=4)
    write_synthetic(root / "raw_test", episodes=4, T=C + H, items_per_shard=4, seed=100)
    with wds.TarWriter(str(root / "gripper.tar")) as w:  # an embodiment without hand keypoints
        for seed in (200, 201, 202):
            s = make_episode(seed, T=C + H)
            s["meta.json"] = dict(s["meta.json"], embodiment="gripper", source="gripper")
            s["__key__"] = s["__key__"].replace("synthetic", "gripper")
            w.write(s)
    for src, dst in (("raw_train", "train"), ("raw_test", "test"), ("gripper.tar", "gripper")):
        cache_features(str(root / src), root / dst, SPEC, FrozenEncoder, progress=False)
    L.seed_everything(0)
    module = WorldModelModule(
        predictor=PredictorConfig(dim=32, depth=1, heads=2, max_frames=C),
        hand_head=HandHeadConfig(dim=32, depth=1, heads=2, scale=0.5),
    )
    dm = ShardDataModule(
        train=[DataSource([str(root / "train")])], clip=ClipConfig(num_frames=4, mode="fixed"),
        batch_size=8, shuffle=0, stats_clips=32, resampled=True, epoch_batches=8,
    )  # fmt: skip
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, max_steps=8, default_root_dir=root,
    )  # fmt: skip
    trainer.fit(module, dm)
    trainer.save_checkpoint(root / "m.ckpt")
    return root


def config(root, out, **kw):
    base = dict(
        checkpoint=str(root / "m.ckpt"),
        data=[DataSource([str(root / "test")], name="syn"), DataSource([str(root / "gripper")])],
        train_data=[DataSource([str(root / "train")])],
        out_dir=str(out), cache_dir=str(root / "cache"), horizon=H, step_s=0.1, batch_size=3,
        probe=ProbeConfig(dim=32, depth=1, heads=2, scale=0.25, steps=15, batch_size=16),
        decoder=DecoderConfig(height=32, channels=32, steps=4, batch_size=8),
        vis_clips=2, progress=False,
    )  # fmt: skip
    return EvalConfig(**{**base, **kw})


def _test_clips(root, wm):
    """Raw features (B, C+H, N, D), actions and dt of the 4 test episodes, straight from shards."""
    feats, hands, valid = [], [], []
    for s in wds.WebDataset(str(root / "test" / "feats-000000.tar"), shardshuffle=False).decode():
        feats.append(torch.from_numpy(s["feats.npy"]).float())
        hands.append(torch.from_numpy(s["hands.npy"]))
        valid.append(torch.from_numpy(s["hands_valid.npy"]))
    from dexwm.data.actions import keypoint_actions

    actions = keypoint_actions(torch.stack(hands), torch.stack(valid))
    return wm.normalize_feats(torch.stack(feats)), actions, torch.full(actions.shape[:2], 0.1)


def test_end_to_end_writes_results_and_numbers_match_definitions(setup, tmp_path):
    res = run_eval(config(setup, tmp_path / "run"))
    out = tmp_path / "run"
    for f in ("results.json", "results.md", "error_vs_horizon.png", "pck_vs_horizon.png"):
        assert (out / f).stat().st_size > 1000, f
    assert len(list((out / "strips").glob("*.png"))) == 2
    assert len(list((out / "videos").glob("*.mp4"))) == 2
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["horizon"] == H and saved["protocol"]["context"] == C
    # groups: the two datasets; their embodiments and "all" add nothing new except "all"
    assert list(saved["groups"]) == ["dataset:gripper", "dataset:syn", "all"]
    syn = saved["groups"]["dataset:syn"]
    assert syn["clips"] == 4 and saved["sources"]["syn"]["clips"] == 4
    methods = syn["methods"]
    assert list(methods) == ["model", "copy_last", "shuffled_actions", "zero_actions", "probe_on_truth"]  # fmt: skip
    # the numbers, recomputed from the shards by their definitions
    wm = WorldModel.from_checkpoint(setup / "m.ckpt")
    f, actions, dt = _test_clips(setup, wm)
    truth = f[:, C:]
    copy = (truth - f[:, C - 1 : C]).abs().mean(dim=(0, 2, 3))  # (H,)
    np.testing.assert_allclose(methods["copy_last"]["feat_mae"], copy, rtol=1e-5)
    with torch.no_grad():
        roll = wm.rollout(f[:, :C], actions[:, : C - 1], dt[:, : C - 1], actions[:, C - 1 :], dt[:, C - 1 :])  # fmt: skip
    model = (roll - truth).abs().mean(dim=(0, 2, 3))
    np.testing.assert_allclose(methods["model"]["feat_mae"], model, rtol=1e-4)
    ratio = syn["ratios"]["copy_last"]["feat_mae"]
    np.testing.assert_allclose(ratio, (copy / model).numpy(), rtol=1e-4)
    # PCK denominator: the right hand's 6 probe points are visible in every true future frame
    for m in ("model", "copy_last", "probe_on_truth"):
        assert methods[m]["pck_visible"] == [4 * 6] * H
        assert all(0 <= v <= 1 for t in methods[m]["pck"].values() for v in t)
    # the gripper source has no hand keypoints: PCK is not reported there, and that is stated
    assert "pck" not in saved["groups"]["dataset:gripper"]["methods"]["model"]
    assert any("PCK skipped for gripper" in n for n in saved["notes"])
    md = (out / "results.md").read_text()
    assert "| shuffled_actions |" in md and "x) |" in md and "PCK skipped for gripper" in md
    assert res["probe"]["train_frames"] > 0 and "cached" in res["probe"]


def test_cli_with_yaml_reuses_cached_probe(setup, tmp_path):
    """eval.py with the tiny preset + a YAML overriding it; the probe and decoder come from the
    cache the first test filled (same training data and settings)."""
    run_eval(config(setup, tmp_path / "first", vis_clips=1, videos=False))
    yaml = tmp_path / "test.yaml"
    yaml.write_text(
        "probe: {dim: 32, depth: 1, heads: 2, scale: 0.25, steps: 15, batch_size: 16, max_frames: 20000}\n"
        "decoder: {height: 32, channels: 32, steps: 4, batch_size: 8, max_frames: 3000}\n"
    )
    cmd = [
        sys.executable, str(ROOT / "eval.py"), "--config", str(ROOT / "configs/eval/tiny.yaml"),
        "--config", str(yaml), "--checkpoint", str(setup / "m.ckpt"),
        "--data", f"[{{paths: [{setup / 'test'}], name: syn}}]",
        "--train_data", f"[{{paths: [{setup / 'train'}]}}]", "--cache_dir", str(setup / "cache"),
        "--horizon", str(H), "--step_s", "0.1", "--out_dir", str(tmp_path / "cli"),
        "--progress", "false",
    ]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path / "cli" / "results.json").read_text())
    assert res["config"]["max_clips"] == 64  # from configs/eval/tiny.yaml
    assert not any("trained in" in n for n in res["notes"])  # both small models from the cache
    assert res["probe"]["cached"].startswith(str(setup / "cache"))


def test_bad_input_fails_early_and_clearly(setup, tmp_path):
    with pytest.raises(ValueError, match=r"no clip: context 3 \+ horizon 9 .* longest .* 6 frames"):
        run_eval(config(setup, tmp_path / "a", horizon=9))
    # the same episodes cached with other encoder weights
    cache_features(str(setup / "raw_test"), tmp_path / "other", EncoderSpec(weights="random").to_dict(), FrozenEncoder, progress=False)  # fmt: skip
    with pytest.raises(
        ValueError,
        match=r"cached features come from encoder .*\(weights \w+\), the checkpoint was trained on .*\(weights \w+\)",
    ):
        run_eval(config(setup, tmp_path / "b", data=[DataSource([str(tmp_path / "other")])]))
    # PCK demanded, but the probe's training shards have no hand keypoints
    gripper = [DataSource([str(setup / "gripper")])]
    syn = [DataSource([str(setup / "test")], name="syn")]
    with pytest.raises(ValueError, match="PCK asked for.*no frames with visible hand keypoints"):
        run_eval(config(setup, tmp_path / "c", pck=True, train_data=gripper, data=syn))
    assert not (tmp_path / "a" / "results.json").exists()
