"""Joint space -> actions against the sim's own kinematics, costs, and the MPC loop end to end on
the real MuJoCo rig with a tiny world model (real encoder, real predictor)."""

import json
import os
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from _plan import tiny_model  # noqa: E402

from dexwm.control import JointSpace, ModelRollout, MPCPolicy, evaluate, run_episode
from dexwm.data.actions import keypoint_actions  # noqa: E402
from dexwm.planning import (  # noqa: E402
    CEM,
    MPPI,
    Chain,
    FeatureCost,
    GradientPlanner,
    KeypointCost,
    OrientationCost,
    PoseCost,
)
from dexwm.planning.costs import Goal, Objective, Prediction, hand_frame, step_weights  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def space(rig):
    return JointSpace.from_rig(rig)


@pytest.fixture(scope="module")
def wm():
    return tiny_model()


def random_joints(rig, n, seed=0):
    rng = np.random.default_rng(seed)
    lo, hi = rig.joint_limits.T
    return np.clip(rig.home + rng.normal(0, 0.3, (n, len(lo))), lo, hi)


# ---- joint space -> actions -------------------------------------------------------------------


def test_keypoints_match_the_sims_own_kinematics(rig, space):
    qs = random_joints(rig, 16)
    ours = space.keypoints(torch.tensor(qs, dtype=torch.float32)).numpy()  # (16, 21, 3)
    for q, kp in zip(qs, ours):
        sim = rig.camera.to_camera(rig.commanded(q)["keypoints"])  # MuJoCo mj_kinematics
        np.testing.assert_allclose(kp, sim, atol=2e-5)


def test_plan_actions_equal_the_training_data_actions(rig, space):
    """Stepping the rig through a plan records commanded keypoints as the exploration data do; the
    actions computed from those observations equal the planner's batched actions."""
    obs = rig.reset("reach", 0, render=False)
    q0 = obs["commanded"]
    plan = np.stack([q0 + 0.05 * (t + 1) for t in range(3)])  # (3, 23)
    plan[1, 2] = 50.0  # far outside the limits: clipped, by the planner and by the rig alike
    seen = [obs]
    for q in plan:
        seen.append(rig.step(q, render=False))
    hands = torch.tensor(np.stack([o["keypoints"] for o in seen]))  # (4, 2, 21, 3)
    valid = torch.tensor(np.stack([o["valid"] for o in seen]))
    data_actions = keypoint_actions(hands, valid)  # (3, 134): what training clips see
    batch = torch.tensor(np.stack([plan, plan + 0.01]), dtype=torch.float32)  # (2, 3, 23)
    acts, kp, q = space.actions(torch.tensor(q0, dtype=torch.float32), batch)
    assert acts.shape == (2, 3, 134) and kp.shape == (2, 4, 21, 3) and q.shape == (2, 3, 23)
    torch.testing.assert_close(acts[0], data_actions, atol=2e-5, rtol=0)
    np.testing.assert_allclose(
        q[0].numpy(), np.stack([o["commanded"] for o in seen[1:]]), atol=1e-6
    )
    assert (
        (acts[..., :63] == 0).all() and (acts[..., 132] == 0).all() and (acts[..., 133] == 1).all()
    )
    assert (acts[0] != acts[1]).any()


def test_spread_and_clip(space, rig):
    std = space.spread(0.3, 0.1)
    assert std.shape == (23,) and (std[:7] == 0.3).all() and (std[7:] == 0.1).all()
    q = space.clip(torch.full((2, 23), 100.0))
    torch.testing.assert_close(q[0], torch.tensor(rig.joint_limits[:, 1], dtype=torch.float32))


def test_step_limit_keeps_plans_in_the_training_motion_range(rig):
    space = JointSpace.from_rig(rig, max_step=torch.full((23,), 0.1))
    q0 = torch.tensor(rig.home, dtype=torch.float32)
    plan = q0 + torch.tensor([0.5, -0.05, 0.3])[:, None].expand(3, 23)  # (H, J): jumps
    q = space.limit(q0, plan[None])[0]
    steps = torch.diff(torch.cat([q0[None], q]), dim=0)
    assert steps.abs().max() <= 0.1 + 1e-6
    torch.testing.assert_close(q[0], space.clip(q0 + 0.1))  # first step: one max_step up
    lo, hi = space.bounds(q0, 3)
    assert lo.shape == hi.shape == (3, 23)
    torch.testing.assert_close(hi[2] - q0, torch.minimum(torch.full((23,), 0.3), space.upper - q0))
    with pytest.raises(ValueError, match="both"):
        MPCPolicy(max_step_arm=0.1)


# ---- costs ------------------------------------------------------------------------------------


def test_feature_cost_weights_and_kinds():
    goal = torch.zeros(4, 8)
    feats = torch.ones(2, 3, 4, 8) * torch.tensor([1.0, 2.0])[:, None, None, None]
    feats[:, 0] *= 0  # the first step matches the goal
    w = step_weights(3, 0.6)
    torch.testing.assert_close(w, torch.tensor([0.36, 0.6, 1.0]))
    pred = Prediction(feats, torch.zeros(2, 4, 21, 3), torch.zeros(2, 3, 23))
    mse = FeatureCost(kind="mse")(pred, Goal(goal))
    l1 = FeatureCost(kind="l1")(pred, Goal(goal))
    torch.testing.assert_close(mse, torch.tensor([1.6, 4 * 1.6]))
    torch.testing.assert_close(l1, torch.tensor([1.6, 2 * 1.6]))
    with pytest.raises(ValueError, match="kind"):
        FeatureCost(kind="huber")


def test_orientation_cost_is_zero_at_the_goal_and_task_specific(rig, space):
    qs = torch.tensor(random_joints(rig, 2, seed=3), dtype=torch.float32)
    kp = space.keypoints(qs)  # (2, 21, 3)
    R = hand_frame(kp)
    torch.testing.assert_close(R[0] @ R[0].T, torch.eye(3), atol=1e-5, rtol=0)
    goal = Goal(torch.zeros(4, 8), frame=R[0], task="grasp")
    pred = Prediction(torch.zeros(2, 3, 4, 8), kp[:, None].expand(2, 4, 21, 3), qs[:, None])
    cost = OrientationCost()(pred, goal)
    assert cost[0].abs() < 1e-5 < cost[1]
    terms = [FeatureCost(), OrientationCost(weight=0.4)]
    assert [t.name for t in Objective(terms, goal).terms] == ["feature", "orientation"]
    assert [t.name for t in Objective(terms, Goal(goal.feats, task="reach")).terms] == ["feature"]


def test_pose_cost_is_the_mean_wrist_and_fingertip_distance_to_the_goal(rig, space):
    qs = torch.tensor(random_joints(rig, 3, seed=4), dtype=torch.float32)
    kp = space.keypoints(qs)  # (3, 21, 3)
    goal = Goal(torch.zeros(4, 8), points=kp[0], task="reach")
    plans = kp[:, None].expand(3, 3, 21, 3).clone()  # (B, H + 1, 21, 3): each holds its pose
    pred = Prediction(torch.zeros(3, 2, 4, 8), plans, qs[:, None].expand(3, 2, 23))
    cost = PoseCost(decay=0.5)(pred, goal)
    pts = [0, 4, 8, 12, 16, 20]  # wrist + fingertips
    d = (kp[:, pts] - kp[0, pts]).norm(dim=-1).mean(-1)  # (3,) metres
    torch.testing.assert_close(cost, d * 1.5)  # weights 0.5, 1 over the 2 steps
    assert cost[0].abs() < 1e-6 < cost[1]
    plans[1, 1] = kp[0]  # reaching the goal at the first step, leaving it at the last
    assert PoseCost(decay=0.5)(Prediction(pred.feats, plans, pred.joints), goal)[1] < cost[1]
    with pytest.raises(ValueError, match="goal hand"):
        PoseCost()(pred, Goal(goal.feats, task="reach"))
    assert not PoseCost().applies("grasp") and PoseCost(tasks=None).applies("grasp")


# ---- rollout and MPC ------------------------------------------------------------------------


def test_batched_rollout_equals_one_candidate_at_a_time(rig, space, wm):
    obs = rig.reset("grasp", 1)
    feats = wm.encode(torch.from_numpy(obs["image"])[None])  # (1, N, D)
    q0 = torch.tensor(obs["commanded"], dtype=torch.float32)
    roll = ModelRollout(wm, space, feats, q0[None])
    plans = q0 + 0.1 * torch.randn(5, 3, 23, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        batched = roll(plans).feats  # (5, 3, N, D)
        single = torch.cat([roll(p[None]).feats for p in plans])
    assert batched.shape == (5, 3, *feats.shape[1:])
    torch.testing.assert_close(batched, single, atol=1e-4, rtol=1e-4)
    assert (batched[0] - batched[1]).abs().max() > 1e-4  # the plan changes the prediction


def test_split_sizes_cover_every_candidate_once():
    from dexwm.control import split_sizes

    assert split_sizes(512, 8) == [64] * 8  # DexWM: 512 samples over 8 GPUs
    assert split_sizes(10, 4) == [3, 3, 2, 2]
    assert split_sizes(3, 8) == [1, 1, 1]  # no empty slice
    assert split_sizes(0, 2) == []
    for n, k in [(7, 3), (65, 8), (1, 1)]:
        sizes = split_sizes(n, k)
        assert sum(sizes) == n and max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError):
        split_sizes(4, 0)


def test_candidates_spread_over_devices_match_one_device(rig, space, wm):
    """Two replicas (both on the CPU here; on a GPU box, "cuda:0", "cuda:1"): each rolls out its
    slice in its own thread; the gathered predictions equal the one-device rollout in order, and
    gradients flow back through the split (the gradient planner)."""
    from dexwm.control import replicate

    obs = rig.reset("reach", 3)
    feats = wm.encode(torch.from_numpy(obs["image"])[None])
    q0 = torch.tensor(obs["commanded"], dtype=torch.float32)
    replicas = replicate(wm, ["cpu", "cpu"])
    assert replicas[0] is wm and replicas[1] is not wm
    one = ModelRollout(wm, space, feats, q0[None])
    two = ModelRollout(wm, space, feats, q0[None], replicas)
    used = []
    for r in replicas:  # record which replica saw how many candidates
        r.rollout = (lambda f: lambda *a: used.append(len(a[3])) or f(*a))(r.rollout)
    plans = q0 + 0.1 * torch.randn(7, 3, 23, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = one(plans).feats, two(plans).feats
    assert sorted(used[-2:]) == [3, 4] and used[0] == 7
    torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)
    x = plans.clone().requires_grad_(True)
    two(x).feats.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0 and torch.isfinite(x.grad).all()
    for r in replicas:
        del r.rollout  # back to the class method
    # the same MPC plan with the candidates split over two devices
    plans_out = []
    for devices in (None, ["cpu", "cpu"]):
        policy = MPCPolicy(CEM(samples=12, elites=3, iterations=2), horizon=3, devices=devices)
        policy.use_model(wm)
        policy.reset(rig, obs["image"], obs)
        plans_out.append(policy.act(obs))
    np.testing.assert_allclose(plans_out[1], plans_out[0], atol=1e-4)
    with pytest.raises(ValueError, match="devices"):
        MPCPolicy(devices=[])


def test_mpc_runs_on_the_rig_and_warm_starts(rig, wm):
    policy = MPCPolicy(
        CEM(samples=16, elites=4, iterations=2), [FeatureCost(), KeypointCost(source="fk")],
        horizon=3, execute=1,
    ).use_model(wm)  # fmt: skip
    record, frames = run_episode(rig, policy, "reach", 2, max_steps=3, video=True)
    assert record["steps"] == 3 and policy.stats["calls"] == 3
    assert policy.stats["evaluations"] == 3 * 2 * 16
    assert len(frames) == 4 and frames[0].shape == (128, 256, 3)
    assert record["final_distance"] is not None and record["plan_s_per_step"] > 0
    # the next plan starts from the shifted previous plan
    plan = policy.plan.clone()
    obs = rig.step(plan[0].numpy())
    calls = []
    policy.planner = lambda rollout, cost, mean, std, *a: (
        calls.append(mean.clone())
        or CEM(samples=8, elites=2, iterations=1)(rollout, cost, mean, std, *a)
    )
    policy.act(obs)
    torch.testing.assert_close(calls[0], torch.stack([plan[1], plan[2], plan[2]]))


@pytest.mark.parametrize(
    "planner",
    [
        MPPI(samples=12, elites=4, iterations=2, smoothing=0.3),
        Chain([CEM(samples=8, elites=2, iterations=1), GradientPlanner(iterations=2)]),
    ],
    ids=["mppi", "cem+gradient"],
)
def test_other_planners_plan_on_the_rig(rig, wm, planner):
    costs = [FeatureCost(kind="l1"), KeypointCost(source="predicted"), OrientationCost()]
    policy = MPCPolicy(planner, costs, execute=2).use_model(wm)
    record, _ = run_episode(rig, policy, "grasp", 0, max_steps=2)
    assert record["steps"] == 2 and policy.stats["calls"] == 1


def test_mpc_plans_respect_the_step_limit(rig, wm):
    policy = MPCPolicy(
        CEM(samples=16, elites=4, iterations=2), max_step_arm=0.05, max_step_hand=0.1
    )
    policy.use_model(wm)
    obs = rig.reset("reach", 3)
    policy.reset(rig, rig.goal_image("reach", 3), obs)
    targets = policy.act(obs)
    steps = np.diff(np.concatenate([obs["commanded"][None], policy.plan.numpy()]), axis=0)
    assert np.abs(steps[:, :7]).max() <= 0.05 + 1e-6 and np.abs(steps[:, 7:]).max() <= 0.1 + 1e-6
    np.testing.assert_allclose(targets, policy.plan[:1].numpy(), atol=1e-6)
    lo, hi = rig.joint_limits.T
    assert (policy.plan.numpy() >= lo - 1e-6).all() and (policy.plan.numpy() <= hi + 1e-6).all()


def test_evaluate_writes_records_summary_and_videos(tmp_path, wm):
    ckpt = tmp_path / "wm.pt"
    wm.save(ckpt)
    from dexwm.control.baselines import HoldPolicy

    policies = [MPCPolicy(CEM(samples=8, elites=2, iterations=1), name="cem-tiny"), HoldPolicy()]
    res = evaluate(policies, tasks=["reach", "place"], episodes=[0], checkpoint=str(ckpt),
                   out=tmp_path / "eval", max_steps=2)  # fmt: skip
    recs = [json.loads(x) for x in (tmp_path / "eval/episodes.jsonl").read_text().splitlines()]
    assert len(recs) == 4 == len(res["episodes"])
    s = json.loads((tmp_path / "eval/summary.json").read_text())
    assert set(s["cem-tiny"]) == {"reach", "place", "all"} and s["cem-tiny"]["all"]["episodes"] == 2
    assert "| cem-tiny | reach | 1 |" in (tmp_path / "eval/summary.md").read_text()
    assert (tmp_path / "eval/videos/cem-tiny/place_00.gif").stat().st_size > 1000
    assert (
        s["hold"]["all"]["evaluations_per_step"] == 0 < s["cem-tiny"]["all"]["evaluations_per_step"]
    )
    assert (tmp_path / "eval/budget.png").stat().st_size > 1000  # success vs planning budget


def test_in_process_evaluation_uses_the_thread_count_and_restores_the_callers(tmp_path):
    """workers=1 runs the episodes in this process: with the `threads` a worker would get (a
    1-worker rerun of an episode must plan with the same float rounding), then gives the caller
    its own count back."""
    from dexwm.control.baselines import HoldPolicy

    class Spy(HoldPolicy):
        seen: list = []

        def act(self, obs):
            Spy.seen.append(torch.get_num_threads())
            return super().act(obs)

    before = torch.get_num_threads()
    want = 1 if before > 1 else 2
    evaluate([Spy(name="spy")], tasks=["reach"], episodes=[0], workers=1, threads=want,
             video=False, max_steps=2)  # fmt: skip
    assert Spy.seen and set(Spy.seen) == {want}
    assert torch.get_num_threads() == before


# ---- bad input --------------------------------------------------------------------------------


def test_bad_inputs_fail_before_any_planning(rig, wm, tmp_path):
    policy = MPCPolicy(CEM(samples=8, elites=2, iterations=1)).use_model(wm)
    obs = rig.reset("reach", 0)
    with pytest.raises(ValueError, match="goal image is"):
        policy.reset(rig, np.zeros((64, 64, 3), np.uint8), obs)
    with pytest.raises(ValueError, match="uint8"):
        policy.reset(rig, np.zeros((128, 128, 3), np.float32), obs)
    from dexwm.models.world_model import WorldModel

    other = WorldModel(wm.encoder_spec, wm.pred_cfg, None, action_dim=10, shape=wm.shape)
    with pytest.raises(ValueError, match="action space has 10"):
        MPCPolicy().use_model(other)
    other.save(tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="action space has 10"):
        MPCPolicy(checkpoint=str(tmp_path / "bad.pt")).setup(None)
    with pytest.raises(ValueError, match="horizon"):
        MPCPolicy(horizon=0)
    with pytest.raises(ValueError, match="execute"):
        MPCPolicy(horizon=2, execute=3)
    with pytest.raises(ValueError, match="elites"):
        MPCPolicy(CEM(samples=4, elites=8))
    with pytest.raises(ValueError, match="unknown task"):
        evaluate([policy], tasks=["push"])
    with pytest.raises(ValueError, match="episodes"):
        evaluate([policy], episodes=[50])
