"""The whole path in seconds, in the default test run: simulated episodes -> cached features ->
train a few steps -> save -> resume -> evaluate -> plan one short episode. (The full demo, with
its report, is tests/test_demo.py, marked slow.)"""

import json
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import timm  # noqa: E402, F401  (before any MuJoCo EGL context: importing triton after one segfaults)
import torch  # noqa: E402
from _plan import ROOT  # noqa: E402

from data_prep.sim_episodes import main as sim_episodes  # noqa: E402
from dexwm.config import load  # noqa: E402
from dexwm.control import MPCPolicy, evaluate  # noqa: E402
from dexwm.data.feature_cache import cache_features  # noqa: E402
from dexwm.evaluation import run_eval  # noqa: E402
from dexwm.models.encoders import FrozenEncoder  # noqa: E402
from dexwm.planning import CEM  # noqa: E402
from dexwm.training.cli import fit  # noqa: E402
from dexwm.training.module import WorldModelModule  # noqa: E402

MODEL, TRAIN = ROOT / "configs/model/tiny.yaml", ROOT / "configs/train/tiny.yaml"


def test_tiny_pipeline_trains_resumes_evaluates_and_plans(tmp_path):
    spec = load(WorldModelModule, MODEL, section="model").wm.encoder_spec.to_dict()
    for split, n, start in (("train", 6, 0), ("heldout", 2, 1000)):
        sim_episodes("allegro", tmp_path / "shards" / split, episodes=n, frames=10, start=start,
                     items_per_shard=4, progress=False)  # fmt: skip
        cache_features(str(tmp_path / "shards" / split), tmp_path / "feats" / split, spec,
                       FrozenEncoder, progress=False)  # fmt: skip
    root = tmp_path / "train"
    args = [
        "--config", str(MODEL), "--config", str(TRAIN),
        "--data.train", json.dumps([{"paths": [str(tmp_path / "feats/train")]}]),
        "--data.batch_size", "4", "--data.num_workers", "0", "--data.epoch_batches", "3",
        "--data.stats_clips", "16", "--trainer.limit_val_batches", "0",
        "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root),
        "--trainer.max_steps", "5", "--checkpoint.every_n_train_steps", "1",
    ]  # fmt: skip
    stop = json.dumps([{"class_path": "_plan.StopAt", "init_args": {"step": 3}}])
    ckpt = fit([*args, "--trainer.callbacks", stop])  # interrupted after 3 of 5 steps
    assert torch.load(ckpt, weights_only=True)["global_step"] == 3
    assert "git commit" in next(root.glob("logs/version_*/config.yaml")).read_text()
    ckpt = fit([*args, "--ckpt_path", "last"])  # resume
    state = torch.load(ckpt, weights_only=True)
    assert state["global_step"] == 5 and state["dexwm"]["git_commit"]
    # plain data only, no module paths: checkpoints survive moving code between modules
    assert "dexwm." not in json.dumps(state["dexwm"]["world_model"])
    assert "hyper_parameters" not in state

    res = run_eval(
        str(ROOT / "configs/eval/tiny.yaml"), checkpoint=ckpt,
        data=[{"paths": [str(tmp_path / "feats/heldout")]}], out_dir=str(tmp_path / "eval"),
        horizon=2, max_clips=2, probe={"steps": 2, "max_frames": 64},
        decoder={"steps": 2, "max_frames": 32}, vis_clips=1, videos=False, progress=False,
    )  # fmt: skip
    (group,) = res["groups"].values()  # one source: one group
    err = group["methods"]["model"]["feat_mae"]
    assert len(err) == 2 and all(0 < e < float("inf") for e in err)
    assert (tmp_path / "eval" / "results.md").exists()

    policy = MPCPolicy(CEM(samples=8, elites=2, iterations=1), execute=2, name="cem")
    out = evaluate([policy], tasks=["reach"], episodes=[0], checkpoint=ckpt, max_steps=4,
                   video=False, out=tmp_path / "plan")  # fmt: skip
    (record,) = out["episodes"]
    assert record["steps"] == 4 and record["calls"] == 2 and record["evaluations"] == 16
    assert (tmp_path / "plan" / "summary.md").exists()
