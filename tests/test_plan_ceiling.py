"""The perfect-model ceiling (the simulator as the model), per-task search settings, staged goals,
the change-weighted feature cost and the planning diagnostics, on the real rig."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from _plan import tiny_model  # noqa: E402

from dexwm.control import JointSpace, MPCPolicy, Policy, Staged, evaluate, run_episode  # noqa: E402
from dexwm.control.diagnostics import diagnose  # noqa: E402
from dexwm.control.sim_rollout import SimRollout, task_distance  # noqa: E402
from dexwm.planning import CEM, FeatureCost  # noqa: E402
from dexwm.planning.costs import Goal, Prediction, TrueDistanceCost  # noqa: E402


@pytest.fixture(scope="module")
def wm():
    return tiny_model()


def test_sim_rollout_predicts_exactly_what_happens_and_leaves_the_rig(rig, wm):
    rig.reset("reach", 2)
    for _ in range(2):
        rig.step(rig.target + 0.02)
    qpos, target, hist = rig.data.qpos.copy(), rig.target.copy(), len(rig.history)
    space = JointSpace.from_rig(rig)
    q0 = torch.as_tensor(rig.target, dtype=torch.float32)
    plans = q0 + 0.05 * torch.randn(3, 2, 23, generator=torch.Generator().manual_seed(0))
    pred = SimRollout(rig, wm.encode, space)(plans)
    assert pred.feats.shape == (3, 2, wm.shape["num_tokens"], wm.shape["dim"])
    np.testing.assert_array_equal(rig.data.qpos, qpos)  # the rig is back where it was
    assert np.array_equal(rig.target, target) and len(rig.history) == hist
    q = space.limit(q0, plans)
    frames = []
    for t in range(2):  # execute candidate 1 for real: the same frames, the same distances
        frames.append(rig.step(q[1, t].numpy().astype(np.float64))["image"])
        assert pred.distance[1, t] == pytest.approx(task_distance(rig))
    torch.testing.assert_close(pred.feats[1], wm.encode(torch.from_numpy(np.stack(frames))))


def test_perfect_model_policy_plans_through_the_simulator(rig, wm):
    policy = MPCPolicy(CEM(samples=6, elites=2, iterations=1), costs=[TrueDistanceCost()],
                       horizon=2, execute=2, model="simulator", name="ceiling").use_model(wm)  # fmt: skip
    record, _ = run_episode(rig, policy, "reach", 0, max_steps=4)
    assert record["steps"] == 4 and record["evaluations"] == 12
    # the privileged cost only exists with the simulator: a learned model cannot give it
    with pytest.raises(ValueError, match="simulator"):
        TrueDistanceCost()(Prediction(torch.zeros(1, 1, 2, 2), None, None), Goal(torch.zeros(2, 2)))


def test_per_task_settings(rig, wm):
    policy = MPCPolicy(CEM(samples=4, elites=2, iterations=1), std_hand=0.1, horizon=3, execute=2,
                       per_task={"place": {"std_hand": 0.01, "execute": 1}}).use_model(wm)  # fmt: skip
    for task, std, k in (("place", 0.01, 1), ("reach", 0.1, 2)):
        obs = rig.reset(task, 0)
        policy.reset(rig, rig.goal_image(task, 0), obs)
        assert policy.execute == k and float(policy.std[0, -1]) == pytest.approx(std)
        assert float(policy.std[0, 0]) == pytest.approx(0.3)  # std_arm: common setting
    # "task/k": from the k-th goal of a staged task on (grasp: hand fixed once lifting)
    policy = MPCPolicy(CEM(samples=4, elites=2, iterations=1), std_hand=0.1, horizon=3, execute=2,
                       per_task={"grasp/1": {"std_hand": 0.01}}).use_model(wm)  # fmt: skip
    for _ in range(2):  # a new episode starts at stage 0 again
        obs = rig.reset("grasp", 1)
        first, lifted = rig.goal_images("grasp", 1)
        policy.reset(rig, first, obs)
        assert float(policy.std[0, -1]) == pytest.approx(0.1)
        policy.retarget(lifted, obs)
        assert float(policy.std[0, -1]) == pytest.approx(0.01)
        assert float(policy.std[0, 0]) == pytest.approx(0.3) and policy.execute == 2
    with pytest.raises(ValueError, match="stage key"):
        MPCPolicy(per_task={"grasp/1": {"horizon": 2}})
    with pytest.raises(ValueError, match="stage key"):
        MPCPolicy(per_task={"grasp/lift": {"std_hand": 0.0}})
    with pytest.raises(ValueError, match="unknown settings"):
        MPCPolicy(per_task={"place": {"temperature": 1.0}})
    with pytest.raises(ValueError, match="execute"):
        MPCPolicy(horizon=3, per_task={"grasp": {"execute": 4}})


def test_hold_margin_keeps_still_unless_a_plan_pays(rig, wm):
    """With the simulator as the model and the true distance as the cost: far from the goal the
    best plan beats holding still (margin 0: it moves); a margin of 0.99 asks for a 99 % cut
    that no 2-step plan gives, so it holds (repeats the current targets) and counts it."""

    def policy(margin):
        return MPCPolicy(CEM(samples=8, elites=2, iterations=1), costs=[TrueDistanceCost()],
                         horizon=2, execute=2, std_arm=0.1, model="simulator", seed=1,
                         per_task={"reach": {"hold_margin": margin}}).use_model(wm)  # fmt: skip

    moved = {}
    for margin in (0.0, 0.99):
        p = policy(margin)
        obs = rig.reset("reach", 3)
        p.reset(rig, rig.goal_image("reach", 3), obs)
        targets = p.act(obs)
        moved[margin] = float(np.abs(targets - obs["commanded"]).max())
        assert p.stats["holds"] == (margin == 0.99) and p.last["evaluations"] == 8 + 2
    assert moved[0.0] > 0.01 and moved[0.99] < 1e-6  # float32 targets
    with pytest.raises(ValueError, match="hold_margin"):
        MPCPolicy(hold_margin=1.0)
    MPCPolicy(per_task={"grasp/1": {"hold_margin": 0.1}})  # a stage may set it


class Recording(CEM):
    """CEM that keeps the search std of every call."""

    def __call__(self, rollout, cost, mean, std, *args):
        self.stds = getattr(self, "stds", []) + [std.clone()]
        return super().__call__(rollout, cost, mean, std, *args)


def test_anneal_narrows_the_search_as_the_goal_nears(rig, wm):
    """The search std scales with the frame's goal distance over the first call's: full at the
    first call, the floor when the frame is the goal image itself, never above full; a new
    stage measures from its own first call; no anneal: always full."""
    planner = Recording(samples=4, elites=2, iterations=1)
    p = MPCPolicy(planner, std_arm=0.1, std_hand=0.2, horizon=2, execute=1, seed=0,
                  per_task={"grasp": {"anneal": 0.25}}).use_model(wm)  # fmt: skip
    obs = rig.reset("grasp", 1)
    first, lifted = rig.goal_images("grasp", 1)
    p.reset(rig, first, obs)
    p.act(obs)
    at_goal = dict(obs, image=first)
    p.act(at_goal)  # the goal itself: distance 0 -> the floor
    p.retarget(lifted, obs)
    p.act(obs)  # a new stage: its first call is the reference again
    full = p.std
    torch.testing.assert_close(planner.stds[0], full)
    torch.testing.assert_close(planner.stds[1], 0.25 * full)
    torch.testing.assert_close(planner.stds[2], full)
    obs = rig.reset("reach", 0)
    p.reset(rig, rig.goal_image("reach", 0), obs)
    p.act(obs)
    p.act(dict(obs, image=rig.goal_image("reach", 0)))
    torch.testing.assert_close(planner.stds[4], full)  # reach: no anneal set
    with pytest.raises(ValueError, match="anneal"):
        MPCPolicy(anneal=0.0)
    MPCPolicy(per_task={"grasp/1": {"anneal": 0.5}})  # a stage may set it


class Scripted(Policy):
    """Holds still; its distance to the goal follows a script (one value per decision)."""

    name = "scripted"

    def __init__(self, distances):
        self.distances, self.goals = list(distances), []

    def reset(self, rig, goal_image, obs):
        super().reset(rig, goal_image, obs)
        self.goals.append(goal_image)

    def retarget(self, goal_image, obs):
        self.goals.append(goal_image)

    def goal_distance(self, obs):
        return self.distances.pop(0)

    def act(self, obs):
        self.stats["calls"] += 1
        return obs["commanded"][None]


def test_staged_goals_advance_when_progress_stops(rig):
    # improving for 4 decisions, then flat: stage 0 is done at the 7th decision
    inner = Scripted([1.0, 0.8, 0.6, 0.5, 0.5, 0.5, 0.5, 0.9, 0.8, 0.7, 0.6] + [0.6] * 20)
    staged = Staged(inner, min_steps=2, patience=3, tolerance=0.02)
    record, _ = run_episode(rig, staged, "grasp", 1, max_steps=12)
    stages = rig.goal_images("grasp", 1)
    assert len(inner.goals) == 2 and staged.switches == [6]
    np.testing.assert_array_equal(inner.goals[0], stages[0])
    np.testing.assert_array_equal(inner.goals[1], stages[1])
    assert record["stage"] == 1 and record["calls"] == 12
    # tasks without stages (or not listed): the final goal image only
    inner = Scripted([1.0] * 50)
    run_episode(rig, Staged(inner, tasks=["pick_place"]), "grasp", 1, max_steps=3)
    assert len(inner.goals) == 1
    np.testing.assert_array_equal(inner.goals[0], stages[-1])


def test_change_weighted_feature_cost_looks_where_goal_and_frame_differ():
    goal, current = torch.zeros(4, 3), torch.zeros(4, 3)
    current[2] = 1.0  # only token 2 differs between the frame and the goal
    g = Goal(goal, current=current)
    cost = FeatureCost(change=1.0, decay=1.0)
    w = cost.token_weights(g)
    assert w.argmax() == 2 and w.mean() == pytest.approx(1.0)
    fix_token_2 = current.clone()
    fix_token_2[2] = 0.0
    spoil_token_0 = current.clone()
    spoil_token_0[0] = 1.0
    pred = Prediction(torch.stack([fix_token_2, spoil_token_0])[:, None], None, None)
    c = cost(pred, g)
    assert c[0] < c[1]
    # uniform weights would rank the two the other way round
    u = FeatureCost(decay=1.0)(pred, g)
    assert u[0] < u[1] and (c[1] - c[0]) > (u[1] - u[0])
    with pytest.raises(ValueError, match="current frame"):
        cost(pred, Goal(goal))


def test_evaluate_with_ceiling_adds_the_perfect_model_twin(tmp_path, wm):
    ckpt = tmp_path / "wm.pt"
    wm.save(ckpt)
    policy = MPCPolicy(CEM(samples=4, elites=2, iterations=1), horizon=1, name="cem")
    res = evaluate([policy], tasks=["reach"], episodes=[0], checkpoint=str(ckpt), max_steps=2,
                   video=False, ceiling=True)  # fmt: skip
    assert set(res["summary"]) == {"cem", "cem-perfect"}
    assert policy.model == "learned"  # the twin is a copy


def test_diagnostics_report(tmp_path, wm):
    ckpt = tmp_path / "wm.pt"
    wm.save(ckpt)
    policy = MPCPolicy(CEM(samples=4, elites=2, iterations=1), horizon=2)
    rep = diagnose([policy], str(ckpt), tasks=["reach"], episodes=1, candidates=6,
                   out=str(tmp_path / "diag"))  # fmt: skip
    med = rep["tasks"]["reach"]["median"]
    assert -1 <= med["rho_true_distance"]["feature"] <= 1
    assert set(med["relative_to_start"]["feature"]) == {
        "success", "hand_posed_object_unmoved", "object_placed_hand_elsewhere"}  # fmt: skip
    assert all(-1 <= v <= 1 for v in med["ranking"].values() if v is not None)
    assert med["hand_head_px"] is not None and med["hand_head_px"] >= 0
    assert "| reach | feature |" in (tmp_path / "diag" / "diagnostics.md").read_text()
