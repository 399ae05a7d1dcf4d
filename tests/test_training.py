"""Training end to end on CPU: overfitting, checkpoint content, exact resume, the CLI."""

import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from _data import synthetic_feats

from dexwm.data.clips import ClipConfig
from dexwm.data.datamodule import ShardDataModule
from dexwm.data.loader import DataSource
from dexwm.models.encoders import EncoderSpec
from dexwm.models.hand_head import HandHeadConfig
from dexwm.models.losses import feature_loss
from dexwm.models.predictor import PredictorConfig
from dexwm.models.world_model import WorldModel
from dexwm.training.module import OptimConfig, WorldModelModule

ROOT = Path(__file__).resolve().parents[1]
CLIP = ClipConfig(num_frames=4, mode="fixed", gap=1)


def tiny_module(**kw):
    return WorldModelModule(
        predictor=PredictorConfig(dim=64, depth=2, heads=4, max_frames=3),
        hand_head=HandHeadConfig(dim=32, depth=1, heads=2, scale=0.5),
        **kw,
    )


def datamodule(root, **kw):
    kw = {"batch_size": 12, "shuffle": 0, "stats_clips": 64, **kw}
    return ShardDataModule(train=[DataSource([str(root)])], clip=CLIP, **kw)


def trainer(tmp_path=None, **kw):
    defaults = dict(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, default_root_dir=tmp_path,
    )  # fmt: skip
    return L.Trainer(**{**defaults, **kw})


@pytest.fixture(scope="module")
def handful(tmp_path_factory):
    """12 episodes of exactly 4 frames: with 4-frame clips, 12 fixed clips."""
    return synthetic_feats(tmp_path_factory, episodes=12, T=4)


def all_clips(dm):
    return next(iter(dm.train_dataloader()))


def test_tiny_model_overfits_a_handful_of_clips(handful):
    L.seed_everything(0)
    dm = datamodule(handful, resampled=True, epoch_batches=150)
    module = tiny_module(optim=OptimConfig(lr=3e-3, pct_start=0.1))
    trainer(max_steps=150).fit(module, dm)
    dm_eval = datamodule(handful, resampled=False)
    batch = all_clips(dm_eval)
    assert len(set(batch["key"])) == 12
    module.eval()
    with torch.no_grad():
        f = module.features(batch)
        start = feature_loss(f[:, :-1], f[:, 1:])  # = the untrained residual model = copy-last
        model = feature_loss(module.wm.predict(f, batch["actions"], batch["dt"]), f[:, 1:])
        hand = module.compute_losses(batch)["hand"]
    assert model < start / 10, (model, start)
    assert hand < 2e-4  # heatmap MSE; ~7.7e-4 for empty heatmaps


def test_checkpoint_holds_config_and_loads_weights_only(handful, tmp_path):
    L.seed_everything(0)
    module = tiny_module()
    module.run_config = {"note": "resolved config goes here"}
    tr = trainer(tmp_path, max_steps=3)
    tr.fit(module, datamodule(handful, resampled=True, epoch_batches=3))
    path = tmp_path / "m.ckpt"
    tr.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    info = ckpt["dexwm"]
    assert info["config"] == {"note": "resolved config goes here"}
    assert info["encoder"]["checksum"] and info["encoder"]["name"] == "timm:tf_efficientnet_lite0"
    assert info["world_model"]["predictor"]["dim"] == 64
    assert not any(k.startswith("wm._encoder") or "backbone" in k for k in ckpt["state_dict"])
    wm = WorldModel.from_checkpoint(path)
    batch = all_clips(datamodule(handful))
    module.eval()
    with torch.no_grad():
        f = module.features(batch)
        torch.testing.assert_close(wm.normalize_feats(batch["feats"]), f)
        torch.testing.assert_close(
            wm.predict(f, batch["actions"], batch["dt"]),
            module.wm.predict(f, batch["actions"], batch["dt"]),
        )
    assert bool(wm.action_norm.fitted)


class StopAfterEpoch(L.Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, module):
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True


def test_interrupted_run_resumes_exactly(handful, tmp_path):
    """Run A: 3 epochs straight. Run B: stopped after epoch 1 (checkpoint), resumed to the end.
    Same data order, optimizer and schedule state: identical weights."""
    kw = dict(resampled=True, epoch_batches=2)

    def run(root, callbacks, ckpt=None):
        L.seed_everything(0)
        module = tiny_module()
        ck = L.pytorch.callbacks.ModelCheckpoint(dirpath=root, save_last=True, every_n_epochs=1)
        tr = trainer(root, max_steps=6, enable_checkpointing=True, callbacks=[ck, *callbacks])
        tr.fit(module, datamodule(handful, **kw), ckpt_path=ckpt)
        return module, tr

    a, _ = run(tmp_path / "a", [])
    b, tr_b = run(tmp_path / "b", [StopAfterEpoch(0)])
    assert tr_b.global_step == 2
    b, tr_b = run(tmp_path / "b", [], ckpt=str(tmp_path / "b" / "last.ckpt"))
    assert tr_b.global_step == 6
    for (k, va), vb in zip(a.wm.state_dict().items(), b.wm.state_dict().values()):
        torch.testing.assert_close(va, vb, msg=k)


def test_encoder_mismatch_in_cached_features_is_refused(handful):
    module = tiny_module()
    batch = all_clips(datamodule(handful))
    enc = dict(batch["encoder"][0], name="timm:vit_small_patch14_dinov2")
    with pytest.raises(
        ValueError, match="cached features were made by timm:vit_small_patch14_dinov2"
    ):
        module.check_data_encoder(enc)


def test_train_cli_killed_run_resumes_from_last(handful, tmp_path):
    """train.py with the YAML presets, killed (SIGKILL) after its first checkpoint; re-running with
    `--ckpt_path last` continues from that step to the end."""
    import os
    import signal
    import time

    cmd = [
        sys.executable, str(ROOT / "train.py"), "fit",
        "--config", str(ROOT / "configs/model/tiny.yaml"), "--config", str(ROOT / "configs/train/tiny.yaml"),
        "--data.train", f"[{{paths: [{handful}]}}]", "--data.num_workers", "0",
        "--data.epoch_batches", "4", "--data.batch_size", "4", "--data.stats_clips", "12",
        "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false",
        "--trainer.val_check_interval", "null", "--trainer.limit_val_batches", "0",
        "--checkpoint.every_n_train_steps", "4", "--trainer.log_every_n_steps", "1",
        "--trainer.max_steps", "60", "--ckpt_path", "last",
        "--model.encoder.stage", "-1",  # the synthetic shards' features: the default spec's 4x4
    ]  # fmt: skip
    last = tmp_path / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-3000:]  # still training
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = torch.load(last, weights_only=True)["global_step"]
    assert 4 <= saved < 60
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 60
    assert ckpt["dexwm"]["config"]["model"]["predictor"]["dim"] == 128  # from tiny.yaml
    logs = sorted((tmp_path / "logs").glob("version_*/metrics.csv"))
    assert len(logs) == 2 and (logs[0].parent / "config.yaml").exists()
    import csv

    steps = [int(row["step"]) for row in csv.DictReader(logs[1].open())]
    assert min(steps) >= saved  # the second run continued, it did not start over


def test_bad_config_errors(handful, tmp_path):
    r = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "fit", "--config", str(ROOT / "configs/model/tiny.yaml"),
         "--model.encoder.name", "timm:not_a_model", "--data.train", f"[{{paths: [{handful}]}}]",
         "--trainer.max_steps", "1", "--trainer.default_root_dir", str(tmp_path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode != 0 and "timm has no model 'not_a_model'" in r.stderr
    with pytest.raises(ValueError, match="at least one source"):
        ShardDataModule(train=[])


def test_features_of_another_encoder_are_named(handful, tmp_path):
    """The tiny preset reads the 8x8 stride-16 stage (112 wide); features cached with the default
    spec (4x4 x 320) must fail with a message that says so, not a broadcasting error."""
    module = WorldModelModule(
        encoder=EncoderSpec(stage=3),
        predictor=PredictorConfig(dim=64, depth=2, heads=4, max_frames=3),
        hand_head=HandHeadConfig(dim=32, depth=1, heads=2, scale=0.5),
    )
    with pytest.raises(ValueError, match="features are 320 wide.*gives 112"):
        trainer(max_steps=1).fit(module, datamodule(handful))


def test_statistics_from_named_sources_only(handful, tmp_path_factory):
    """data.stats_sources: the normalisers are fitted on the named sources alone (e.g. the target
    embodiment's when other robots are mixed in), not on the pooled mix."""
    from dexwm.data.stats import compute_stats

    other = synthetic_feats(tmp_path_factory, episodes=8, T=6)
    train = [DataSource([str(handful)], name="target"), DataSource([str(other)], name="other")]
    for names, sources in ((["target"], train[:1]), (None, train)):
        dm = ShardDataModule(train=train, clip=CLIP, batch_size=12, shuffle=0, stats_clips=64,
                             stats_sources=names)  # fmt: skip
        module = tiny_module()
        trainer(max_steps=1).fit(module, dm)
        want = compute_stats(sources, CLIP, 64, progress=False)
        torch.testing.assert_close(
            module.wm.feat_norm.mean, torch.tensor(want["feat_mean"], dtype=torch.float32)
        )
        if names:
            target_mean = module.wm.feat_norm.mean.clone()
    assert not torch.allclose(target_mean, module.wm.feat_norm.mean)  # the pooled ones differ
    with pytest.raises(ValueError, match="stats_sources"):
        ShardDataModule(train=train, clip=CLIP, stats_sources=["robot"])
