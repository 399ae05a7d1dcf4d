"""Data aggregation and baselines: MPC episodes written back as shards the loader reads (with the
planner's actions), baselines in the harness, BC training, the plan.py entry point."""

import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from _plan import tiny_model  # noqa: E402
from _procs import HAS_PROC, alive, kill_once_workers_are_busy  # noqa: E402

from dexwm.control import JointSpace, MPCPolicy, evaluate, run_episode
from dexwm.control.baselines import HoldPolicy, OraclePolicy, RandomPolicy  # noqa: E402
from dexwm.control.bc import BCPolicy, train_goal_bc  # noqa: E402
from dexwm.control.collect import write_episode_shard  # noqa: E402
from dexwm.data.clips import ClipConfig, make_clips  # noqa: E402
from dexwm.data.schema import validate_sample  # noqa: E402
from dexwm.models.encoders import FrozenEncoder  # noqa: E402
from dexwm.planning import CEM  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def collected(rig, tmp_path_factory):
    """Two short random-policy episodes written as shards, then with cached features."""
    from dexwm.data.feature_cache import cache_features

    folder = tmp_path_factory.mktemp("collected")
    runs = []
    for i, task in enumerate(("reach", "grasp")):
        seen = []
        record, _ = run_episode(rig, RandomPolicy(seed=i), task, i, max_steps=12,
                                stop_on_success=False, observations=seen)  # fmt: skip
        runs.append((seen, write_episode_shard(rig, seen, folder / "shards", f"random_{task}")))
    cache_features(
        str(folder / "shards" / "*.tar"),
        folder / "feats",
        tiny_model(perturb=False).encoder_spec.to_dict(),  # the features the tiny preset reads
        FrozenEncoder,
        progress=False,
    )
    return runs, folder


def test_collected_episodes_are_valid_shards_with_the_planners_actions(rig, collected):
    import webdataset as wds

    runs, folder = collected
    seen, path = runs[0]
    samples = list(wds.WebDataset(path, shardshuffle=False, empty_check=False).decode())
    assert len(samples) == 1
    s = samples[0]
    validate_sample(s, need_frames=True)
    assert s["frames.npy"].shape == (13, 128, 128, 3) and s["meta.json"]["embodiment"] == "allegro"
    clip = make_clips(s, ClipConfig(num_frames=13, mode="fixed", gap=1), np.random.default_rng(0))[
        0
    ]
    space = JointSpace.from_rig(rig)
    joints = torch.tensor(np.stack([o["commanded"] for o in seen]), dtype=torch.float32)
    acts, _, _ = space.actions(joints[0], joints[None, 1:])
    np.testing.assert_allclose(clip["actions"], acts[0].numpy(), atol=2e-5)
    np.testing.assert_allclose(clip["dt"], 0.1, atol=1e-6)


def test_baselines_in_the_harness(rig):
    res = evaluate([HoldPolicy(), RandomPolicy(), OraclePolicy()], tasks=["reach"], episodes=[4],
                   video=False)  # fmt: skip
    by = {r["policy"]: r for r in res["episodes"]}
    assert by["oracle"]["success_dexwm"] and by["oracle"]["success_strict"]
    assert not by["hold"]["success_dexwm"]
    assert by["oracle"]["final_distance"] < 0.03 < by["hold"]["final_distance"]
    assert by["random"]["steps"] == 40  # no success: the task's full step budget


def test_goal_bc_trains_and_acts(rig, collected, tmp_path):
    _, folder = collected
    out = tmp_path / "bc.pt"
    info = train_goal_bc(str(folder / "feats"), str(out), steps=40, batch_size=32, val_episodes=1)
    hist = info["history"]
    assert info["episodes"] == 2 and hist[-1]["train"] < hist[0]["train"]
    ck = torch.load(out, weights_only=True)
    assert ck["config"]["chunk"] == 3 and ck["encoder"]["name"]
    policy = BCPolicy(str(out), execute=2)
    record, _ = run_episode(rig, policy, "reach", 1, max_steps=4)
    assert record["steps"] == 4 and policy.stats["calls"] == 2
    obs = rig.observe()
    plan = policy.plan(obs, horizon=5)
    assert plan.shape == (5, 23) and np.allclose(plan[3], plan[4])
    lo, hi = rig.joint_limits.T
    assert (plan >= lo - 1e-6).all() and (plan <= hi + 1e-6).all()
    # as the planner's prior: its plan is a candidate (or the search's centre) at every call
    seen = []
    planner = CEM(samples=8, elites=2, iterations=1)

    def spy(roll, cost, mean, std, lo, hi, props, gen):
        seen.append((mean, props))
        return planner(roll, cost, mean, std, lo, hi, props, gen)

    for prior_mean in (False, True):
        mpc = MPCPolicy(planner, prior=BCPolicy(str(out)), prior_mean=prior_mean).use_model(
            tiny_model()
        )
        mpc.planner = spy
        obs = rig.reset("grasp", 2)
        mpc.reset(rig, rig.goal_image("grasp", 2), obs)
        mpc.act(obs)
        expected = torch.tensor(mpc.prior.plan(obs, 3), dtype=torch.float32)
        mean, props = seen[-1]
        torch.testing.assert_close(mean if prior_mean else props[0], expected)


def test_zoom_crops_centre_the_hand_and_pad_at_the_border(rig):
    from dexwm.control.goal_pose import hand_centre, zoom_crops

    images = np.zeros((2, 128, 128, 3), np.uint8)
    images[0, 40, 90] = 255  # (u, v) = (90, 40)
    images[1, :, 0] = 7  # left column, repeated past the border
    crops, c = zoom_crops(images, np.array([[90.2, 39.7], [0.0, 64.0]]), 56)
    assert crops.shape == (2, 56, 56, 3) and c.tolist() == [[90, 40], [0, 64]]
    assert crops[0, 28, 28].tolist() == [255, 255, 255] and crops[0].sum() == 3 * 255
    assert (crops[1, :, :29] == 7).all() and (crops[1, :, 29:] == 0).all()
    # the hand's box centre: FK of the joints through the rig's camera, as the rig projects it
    q = rig.home.copy()
    space = JointSpace.from_rig(rig)
    kp = rig.commanded(q)["keypoints"]
    uv = rig.camera.pixels(rig.camera.to_camera(kp), 128)
    want = (uv.max(0) + uv.min(0)) / 2
    got = hand_centre(space, torch.tensor(q, dtype=torch.float32)[None], 128)[0]
    np.testing.assert_allclose(got.numpy(), want, atol=0.5)


def test_goal_pose_head_trains_and_gives_the_pose_cost_its_goal(rig, collected, tmp_path):
    from dexwm.control.diagnostics import pose_head_error
    from dexwm.control.goal_pose import (
        GoalPoseEstimator,
        error_breakdown,
        hand_error,
        train_goal_pose,
    )
    from dexwm.planning import FeatureCost, PoseCost
    from dexwm.sim.explore import Explorer, random_object

    _, folder = collected
    out = tmp_path / "pose.pt"
    info = train_goal_pose(str(folder / "feats"), str(out), poses=40, steps=60, batch_size=32,
                           progress=False)  # fmt: skip
    hist = info["history"]
    assert info["frames"] == 2 * 13 + 36  # both episodes' frames + 36 of 40 pose frames (4 val)
    assert hist[-1]["train_m"] < hist[0]["train_m"]
    goal = info["goal_error"]["reach"]  # measured on the 50 reach goal images
    assert goal["episodes"] == 50 and 0 < goal["median_m"] <= goal["p90_m"]
    assert 0 <= goal["under_3cm"] <= goal["under_15cm"] <= 1
    assert len(goal["points_median_m"]) == 6  # wrist + 5 fingertips, each at most the largest
    assert max(goal["points_median_m"]) <= goal["median_m"] + 1e-6
    assert 0 <= goal["arm_only_median_m"] and 0 <= goal["fingers_only_median_m"]
    cache = Path(f"{out}.poses.npz")
    stamp = cache.stat().st_mtime_ns
    train_goal_pose(str(folder / "feats"), str(out), poses=40, steps=10, goal_tasks=[],
                    progress=False)  # fmt: skip
    assert cache.stat().st_mtime_ns == stamp  # the pose frames are reused, not rendered again
    assert info["zoom_val"]["median_m"] > 0  # the zoom stage trained on 56-px crops of them
    assert np.load(cache)["zoom_feats"].shape == (40, *np.load(cache)["feats"].shape[1:])
    # the estimator reads a goal image: joints whose FK the cost compares with the plan's
    head = GoalPoseEstimator(str(out))
    rng = np.random.default_rng(5)
    name, pose = random_object(rng)
    q = Explorer(rig).random_pose(rng, rig.home)
    image = rig.render(None, rig.state_data(q, name, pose))
    est = head(image)
    assert est.shape == (23,) and torch.isfinite(est).all()
    space = JointSpace.from_rig(rig)
    assert head.zoom is not None and head.zoom["crop"] == 56
    first = head.net(head.encoder(torch.from_numpy(image)[None]).float())[0]
    assert not torch.allclose(est, first)  # the zoom stage re-estimates from its crop
    torch.testing.assert_close(head(image, space), est)
    err = hand_error(space, est[None], torch.tensor(q, dtype=torch.float32)[None])
    assert err.shape == (1,) and 0 <= float(err) < 1.0
    with pytest.raises(ValueError, match="uint8"):
        head(image.astype(np.float32))
    # the breakdown: an estimate off in the finger joints only misses nothing with its arm alone
    # and leaves the wrist where it is; off in the arm only, nothing with its fingers alone
    true = torch.tensor(q, dtype=torch.float32)[None]
    off = true.clone()
    off[:, space.n_arm :] += 0.3
    parts = error_breakdown(space, off, true)
    assert parts["arm_only_median_m"] == 0 and parts["points_median_m"][0] < 1e-6
    assert parts["fingers_only_median_m"] > 0.01 and max(parts["points_median_m"][1:]) > 0.01
    off = true.clone()
    off[:, : space.n_arm] += 0.1
    parts = error_breakdown(space, off, true)
    assert parts["fingers_only_median_m"] == 0 and parts["arm_only_median_m"] > 0.01
    # MPC with the pose cost: the goal's points are FK of the head's estimate for the goal image
    mpc = MPCPolicy(CEM(samples=8, elites=2, iterations=1), costs=[FeatureCost(), PoseCost()],
                    goal_pose=str(out)).use_model(tiny_model())  # fmt: skip
    obs = rig.reset("reach", 3)
    goal_image = rig.goal_image("reach", 3)
    mpc.reset(rig, goal_image, obs)
    torch.testing.assert_close(mpc.objective.goal.points, space.keypoints(head(goal_image)))
    assert [t.name for t in mpc.objective.terms] == ["feature", "pose"]
    assert mpc.act(obs).shape == (1, 23)
    # its goal-image error, as `plan.py diagnose` reports it
    true = torch.tensor(rig.episode.goal_joints, dtype=torch.float32)[None]
    expected = float(hand_error(space, head(goal_image)[None], true)[0])
    assert pose_head_error(rig, mpc, "reach", 3) == pytest.approx(expected)
    obs = rig.reset("grasp", 3)  # PoseCost is a reach term by default: no head call for grasp
    mpc.reset(rig, rig.goal_image("grasp", 3), obs)
    assert mpc.objective.goal.points is None
    with pytest.raises(ValueError, match="goal-pose head"):
        MPCPolicy(costs=[PoseCost()])
    with pytest.raises(FileNotFoundError, match="plan.py goal_pose"):
        MPCPolicy(costs=[PoseCost()], goal_pose=str(tmp_path / "none.pt")).check()
    # pose_proposal: a candidate straight to the pose goal's joints; with no spread (every
    # sample is the start) and the pose cost alone it is the best plan, at the step limit
    mpc = MPCPolicy(CEM(samples=8, elites=2, iterations=1), costs=[PoseCost()], std_arm=0.0,
                    std_hand=0.0, max_step_arm=0.05, max_step_hand=0.1, use="best",
                    goal_pose=str(out), pose_proposal=True).use_model(tiny_model())  # fmt: skip
    obs = rig.reset("reach", 3)
    mpc.reset(rig, goal_image, obs)
    q0 = torch.as_tensor(obs["commanded"], dtype=torch.float32)
    straight = mpc.space.limit(q0, mpc.pose_q.expand(mpc.horizon, -1))
    assert not torch.allclose(straight[0], q0)
    np.testing.assert_allclose(mpc.act(obs)[0], straight[0].numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="pose_proposal"):
        MPCPolicy(costs=[FeatureCost()], pose_proposal=True)


def test_plan_py_cli_writes_results_and_config(tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, str(ROOT / "plan.py"), "eval", "--config",
           str(ROOT / "configs/plan/baselines.yaml"), "--policies",
           "[{class_path: dexwm.control.baselines.HoldPolicy}]", "--tasks", "[place]",
           "--episodes", "[3]", "--max_steps", "3", "--out", str(out)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| hold | place | 1 |" in done.stdout
    assert "git commit" in (out / "config.yaml").read_text()
    assert json.loads((out / "summary.json").read_text())["hold"]["place"]["episodes"] == 1
    assert (out / "videos/hold/place_03.gif").exists()
    bad = subprocess.run(cmd[:-2] + ["--episodes", "[77]"], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)  # fmt: skip
    assert bad.returncode != 0 and "episodes must lie in 0..49" in bad.stderr


def test_aggregation_round_collects_finetunes_and_replans(tmp_path, collected):
    """One round end to end: evaluate, collect MPC episodes as shards, cache features, fine-tune
    with train.py, evaluate the new model."""
    from dexwm.control import MPCPolicy
    from dexwm.control.aggregate import aggregate
    from dexwm.planning import CEM

    _, folder = collected
    ckpt = tmp_path / "wm.pt"
    tiny_model().save(ckpt)
    policy = MPCPolicy(CEM(samples=8, elites=2, iterations=1), execute=3, name="cem")
    res = aggregate(str(ckpt), policy, [str(folder / "feats")], str(tmp_path / "agg"), rounds=1,
                    tasks=["reach"], eval_episodes=[0], collect_episodes=[1], finetune_steps=3,
                    max_steps=6, train_args=["--data.batch_size", "4", "--data.num_workers", "0"])  # fmt: skip
    rounds = res["rounds"]
    assert [r["round"] for r in rounds] == [0, 1] and rounds[1]["checkpoint"].endswith("last.ckpt")
    assert rounds[0]["summary"]["reach"]["episodes"] == 1
    assert (tmp_path / "agg/round0/shards/cem_collect_reach_01.tar").exists()
    assert json.loads((tmp_path / "agg/rounds.json").read_text())[1]["round"] == 1
    with pytest.raises(ValueError, match="overlap"):
        aggregate(
            str(ckpt), policy, [], str(tmp_path / "x"), eval_episodes=[1], collect_episodes=[1]
        )


def test_plan_configs_load_and_the_default_centres_on_bc():
    """Every planning config builds; the default planner searches around BC's plan, the
    model-only one (the transfer study's) has no prior, eval.yaml holds the default as it is and
    the baselines."""
    from dexwm.control import Staged
    from dexwm.control.episodes import load_policies

    def inner(p):
        return p.policy if isinstance(p, Staged) else p

    for f in sorted((ROOT / "configs/plan").glob("*.yaml")):
        if f.read_text().startswith("policies:") or "\npolicies:" in f.read_text():
            assert load_policies(str(f)), f
    (default,) = load_policies(str(ROOT / "configs/plan/default.yaml"))
    assert isinstance(inner(default).prior, BCPolicy) and inner(default).prior_mean
    executes = {}
    for task in ("reach", "grasp", "place"):  # reach replans every control step (README)
        inner(default)._apply_search(task)
        executes[task] = inner(default).execute
    assert executes == {"reach": 1, "grasp": 2, "place": 2}
    # reach adds the goal-pose term, read from the goal-pose head's checkpoint
    from dexwm.planning import FeatureCost, PoseCost

    costs = inner(default).costs
    assert [type(t) for t in costs] == [FeatureCost, PoseCost] and costs[1].tasks == ["reach"]
    assert inner(default).goal_pose == "runs/plan/goal_pose.pt"
    assert inner(default).pose_proposal  # reach: a candidate straight to the head's goal pose
    (alone,) = load_policies(str(ROOT / "configs/plan/model_only.yaml"))
    assert inner(alone).prior is None
    names = [p.name for p in load_policies(str(ROOT / "configs/plan/eval.yaml"))]
    assert names == ["cem", "bc", "hold", "random", "oracle"]

    def first(name):
        return yaml.safe_load((ROOT / "configs/plan" / name).read_text())["policies"][0]

    assert first("eval.yaml") == first("default.yaml")  # the README's table is the default's
    with pytest.raises(FileNotFoundError, match="plan.py bc"):
        BCPolicy("no/such/bc.pt").setup()
    # a missing prior fails before any worker starts, with the same message
    inner(default).prior.checkpoint = "no/such/bc.pt"
    with pytest.raises(FileNotFoundError, match="plan.py bc"):
        evaluate([default], tasks=["reach"], episodes=1, workers=2, checkpoint="no/such/wm.ckpt")


@pytest.mark.skipif(not HAS_PROC, reason="reads /proc (Linux)")
def test_killed_evaluation_takes_its_workers_with_it(tmp_path):
    """SIGKILL on an evaluation must not leave its workers planning on: each episode here lasts
    minutes (hold still for 100,000 steps), so without the watchdog they would outlive the test."""
    code = (
        "import os; os.environ.setdefault('MUJOCO_GL', 'egl'); import timm\n"
        "from dexwm.control import evaluate\n"
        "from dexwm.control.baselines import HoldPolicy\n"
        f"evaluate([HoldPolicy()], tasks=['reach'], episodes=4, workers=2, out={str(tmp_path)!r},\n"
        "         max_steps=100000, stop_on_success=False)\n"
    )
    assert len(kill_once_workers_are_busy([sys.executable, "-c", code], ROOT)) == 2


@pytest.mark.skipif(not HAS_PROC, reason="reads /proc (Linux)")
def test_in_process_evaluation_outlives_its_parent(tmp_path):
    """With one worker the evaluation runs in-process and must not take the parent watchdog:
    a run started with nohup keeps going when its shell exits. Here the parent exits once the
    first episode is written; the evaluation must still finish all three."""
    import signal
    import time

    inner = (
        "import os; os.environ.setdefault('MUJOCO_GL', 'egl'); import timm\n"
        "from dexwm.control import evaluate\n"
        "from dexwm.control.baselines import HoldPolicy\n"
        f"evaluate([HoldPolicy()], tasks=['reach'], episodes=3, workers=1, out={str(tmp_path)!r},\n"
        "         max_steps=150, stop_on_success=False, video=False)\n"
    )
    outer = (
        "import pathlib, subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, '-c', {inner!r}])\n"
        "print(p.pid, flush=True)\n"
        f"log = pathlib.Path({str(tmp_path)!r}) / 'episodes.jsonl'\n"
        "while p.poll() is None and not (log.exists() and log.read_text().strip()):\n"
        "    time.sleep(0.2)\n"
    )
    parent = subprocess.run(
        [sys.executable, "-c", outer], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    child = int(parent.stdout.split()[0])
    summary = tmp_path / "summary.json"
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not summary.exists() and alive(child):
            time.sleep(0.5)
        assert summary.exists(), "the evaluation died with its parent"
        assert len((tmp_path / "episodes.jsonl").read_text().splitlines()) == 3
    finally:
        if alive(child):
            os.kill(child, signal.SIGKILL)
