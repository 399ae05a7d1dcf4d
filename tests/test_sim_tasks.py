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
    episode = {"reach": 4, "grasp": 11, "place": 5, "pick_place": 5}[task]
    rig.reset(task, episode, render=False)
    for _ in range(HOLD_STEPS + 2):  # holding the start pose never succeeds
        rig.step(rig.home, render=False)
    assert not rig.success("dexwm") and not rig.success("strict")
    result = run_oracle(rig, task, episode)
    assert result["dexwm"] and result["strict"], result
    assert rig.success("dexwm") and rig.success("strict")
    assert len(rig.history) <= rig.episode.max_steps


def test_place_starts_grasped_and_lifted_pick_place_on_the_table(rig):
    obs = rig.reset("place", 3)
    rest_z = rig.episode.object_pose[0][2]
    assert rig.object_position()[2] > rest_z + 0.05 and rig.hand_object_contact()
    assert rig.history == [] and np.array_equal(obs["commanded"], rig.target)
    # the same layout as the scripted grasp left it, every time (seeded, no rendering involved)
    first = rig.object_position()
    rig.reset("place", 3)
    np.testing.assert_array_equal(rig.object_position(), first)
    rig.reset("pick_place", 3)
    assert abs(rig.object_position()[2] - rig.episode.object_pose[0][2]) < 0.005
    assert not rig.hand_object_contact()


def test_staged_goal_images(rig):
    """grasp: closed around the object on the table, then the lifted goal; pick_place: grasped,
    lifted, placed; reach and place: the goal only."""
    counts = {"reach": 1, "grasp": 2, "place": 1, "pick_place": 3}
    for task, n in counts.items():
        images = rig.goal_images(task, 1)
        assert len(images) == n
        np.testing.assert_array_equal(images[-1], rig.goal_image(task, 1))
    held, lifted = rig.goal_images("grasp", 1)
    assert np.abs(held.astype(int) - lifted.astype(int)).mean() > 1


def test_snapshot_restore_replays_exactly(rig):
    """The perfect model's premise: from a restored snapshot the same targets give the same
    physics and the same pictures, and the task history is rewound too."""
    rig.reset("grasp", 1)
    rng = np.random.default_rng(0)
    for _ in range(3):
        rig.step(rig.target + rng.normal(0, 0.05, 23), render=False)
    snap = rig.snapshot()
    targets = [rig.target + rng.normal(0, 0.05, 23) for _ in range(4)]
    first = [rig.step(q)["image"] for q in targets]
    qpos, n = rig.data.qpos.copy(), len(rig.history)
    rig.restore(snap)
    assert len(rig.history) == 3
    again = [rig.step(q)["image"] for q in targets]
    np.testing.assert_array_equal(rig.data.qpos, qpos)
    assert len(rig.history) == n
    assert all(np.array_equal(a, b) for a, b in zip(first, again))


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
