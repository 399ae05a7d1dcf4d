"""Tasks of the Allegro rig: seeded episodes, success tests, oracles, control safety, bad input."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("LP_NUM_THREADS", "1")  # Mesa llvmpipe: faster with one thread here

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from dexwm.sim.control import UnreachableTarget  # noqa: E402
from dexwm.sim.kinematics import KeypointFK  # noqa: E402
from dexwm.sim.oracle import Oracle, run_oracle  # noqa: E402
from dexwm.sim.rig import Rig  # noqa: E402
from dexwm.sim.tasks import HOLD_STEPS, N_EPISODES, TASKS, make_episode  # noqa: E402


def test_bad_task_and_episode_are_clear_errors(rig):
    with pytest.raises(ValueError, match="unknown task 'push'"):
        rig.reset("push", 0)
    for bad in (-1, N_EPISODES, 1000):
        with pytest.raises(ValueError, match="not in the evaluation set"):
            rig.reset("grasp", bad)
    with pytest.raises(ValueError, match="thresholds"):
        rig.reset("reach", 0, render=False)
        rig.success("loose")
    with pytest.raises(NotImplementedError, match="allegro"):
        Rig("panda_gripper").reset("grasp", 0)


def test_episodes_are_seeded_and_distinct(rig):
    a, b = make_episode(rig, "place", 3), make_episode(rig, "place", 3)
    np.testing.assert_array_equal(a.object_pose[0], b.object_pose[0])
    np.testing.assert_array_equal(a.goal_joints, b.goal_joints)
    layouts = {tuple(np.round(make_episode(rig, "grasp", i).object_pose[0], 4)) for i in range(8)}
    assert len(layouts) == 8
    assert np.linalg.norm(a.target - a.object_pose[0]) >= 0.15


@pytest.mark.parametrize("task", TASKS)
def test_success_fires_on_oracle_final_state_not_initial(rig, task):
    episode = {"reach": 4, "grasp": 11, "place": 5}[task]
    rig.reset(task, episode, render=False)
    for _ in range(HOLD_STEPS + 2):  # holding the start pose never succeeds
        rig.step(rig.home, render=False)
    assert not rig.success("dexwm") and not rig.success("strict")
    result = run_oracle(rig, task, episode)
    assert result["dexwm"] and result["strict"], result
    assert rig.success("dexwm") and rig.success("strict")
    assert len(rig.history) <= rig.episode.max_steps


def test_goal_image_shows_goal_state_without_disturbing_sim(rig):
    obs = rig.reset("grasp", 2)
    qpos = rig.data.qpos.copy()
    goal = rig.goal_image("grasp", 2)
    assert goal.shape == obs["image"].shape and goal.dtype == np.uint8
    assert np.abs(goal.astype(int) - obs["image"].astype(int)).mean() > 2
    np.testing.assert_array_equal(rig.data.qpos, qpos)
    np.testing.assert_array_equal(rig.goal_image("grasp", 2, size=224).shape, (224, 224, 3))
    # the goal of another episode renders its own object, then the live one is restored
    rig.goal_image("reach", 7)
    assert rig.render().tobytes() == obs["image"].tobytes()


def test_observation_carries_commanded_keypoints(rig):
    rig.reset("reach", 0, render=False)
    fk = KeypointFK(rig.model, rig.info, rig.camera)
    target = rig.home + np.r_[np.full(7, 0.1), np.full(16, 0.2)]
    obs = rig.step(target, render=False)
    expected = fk(torch.tensor(target[None]))[0].numpy()
    np.testing.assert_allclose(obs["keypoints"][1], expected, atol=1e-6)
    assert not obs["keypoints"][0].any() and obs["valid"].tolist() == [False, True]
    np.testing.assert_allclose(
        obs["keypoints_uv"][1], rig.camera.pixels(expected, rig.size), atol=1e-3
    )
    assert obs["ee"].shape == (7,) and obs["ee"][6] == 0.0
    # the position servos track: achieved joints close to the commanded ones after a step
    assert np.abs(obs["joints"] - target).max() < 0.15


def test_planner_like_random_targets_are_safe(rig):
    rig.reset("grasp", 0, render=False)
    rng = np.random.default_rng(0)
    std = np.r_[np.full(7, 0.3), np.full(16, 0.1)]  # the planner's initial CEM spread
    q = rig.home.copy()
    for _ in range(25):
        q = q + rng.normal(0, std)
        obs = rig.step(q, render=False)
        assert np.isfinite(obs["joints"]).all()
        q = obs["commanded"]  # targets are clipped to the joint limits
        lo, hi = rig.joint_limits.T
        assert ((q >= lo) & (q <= hi)).all()
    assert np.abs(rig.data.qvel).max() < 50
    obs = rig.step(np.full(23, 1e3), render=False)  # absurd targets: clipped, no explosion
    assert np.isfinite(rig.data.qpos).all()
    with pytest.raises(ValueError, match="shape"):
        rig.step(np.zeros(7))
    with pytest.raises(ValueError, match="NaN"):
        rig.step(np.full(23, np.nan))


def test_unreachable_target_is_a_clear_error(rig):
    rig.reset("reach", 0, render=False)
    far = {rig.info.palm_site: np.array([2.0, 0.0, 0.3])}
    with pytest.raises(UnreachableTarget, match="out of reach"):
        rig.ik.solve(rig.home, far, active=range(7), strict=True)
    with pytest.raises(RuntimeError, match="reset"):
        Oracle(Rig("allegro"))
