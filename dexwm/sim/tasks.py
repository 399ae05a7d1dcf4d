"""The evaluation tasks of the Allegro rig: reach, grasp, place (DexWM's three, DESIGN.md s.2) and
pick_place (a long-horizon task beyond DexWM's).

Each task has a fixed set of 50 seeded episodes (index 0..49): object, its pose, and a goal state
(robot joints + object pose) from which the goal image is rendered. `place` starts as DexWM's
does, with the object already grasped and lifted (the rig runs a scripted grasp at reset, without
rendering); `pick_place` starts with the object on the table (the earlier `place`). Success must
hold for `HOLD_STEPS` consecutive 10 Hz control steps and is reported under two threshold sets:

| task  | "dexwm" (the paper's)                      | "strict"                                 |
|-------|--------------------------------------------|------------------------------------------|
| reach | palm + 5 fingertips each within 0.15 m of  | ... within 0.03 m                        |
|       | their goal positions                       |                                          |
| grasp | any hand-object contact                    | object lifted >= 0.05 m and in the hand  |
| place | object centre within 0.10 m of the target  | ... within 0.05 m                        |
| pick_place | as place                              | as place                                 |
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from dexwm.sim import grasps
from dexwm.sim.control import UnreachableTarget
from dexwm.sim.scene import OBJECT_NAMES

TASKS = ("reach", "grasp", "place", "pick_place")
DEXWM_TASKS = ("reach", "grasp", "place")  # the tasks of DexWM's evaluation
N_EPISODES = 50
HOLD_STEPS = 10
MAX_STEPS = {"reach": 40, "grasp": 50, "place": 50, "pick_place": 70}
THRESHOLDS = {
    "dexwm": {"reach": 0.15, "place": 0.10},
    "strict": {"reach": 0.03, "place": 0.05, "lift": 0.05},
}
# pick_place keeps the seed of the earlier `place`, so its episodes are the same ones
_TASK_SEED = {"reach": 1001, "grasp": 2002, "pick_place": 3003, "place": 4004}
OBJECT_X, OBJECT_Y, OBJECT_YAW = (0.46, 0.60), (-0.13, 0.10), 0.45
TARGET_X, TARGET_Y = (0.42, 0.62), (-0.18, 0.12)  # place targets (object centre)
MIN_PLACE_DISTANCE = 0.15  # start-to-target distance, so "dexwm" place is not met at the start
REACH_MIN_MOVE = 0.18  # goal palm at least this far from the start palm
GRASP_LIFT = 0.10  # height of the object in the grasp goal state
IMAGE_MARGIN = 0.08  # goal keypoints project at least this fraction of the frame inside it
REACH_BOX = (np.array([0.35, -0.3, 0.06]), np.array([0.7, 0.2, 0.3]))  # goal palm (world)


@dataclass(frozen=True)
class Episode:
    """One evaluation episode. Poses are ((x, y, z) world, yaw). goal_joints (J,) + goal_object
    define the goal state; target: place position of the object centre (place, pick_place);
    goal_points (6, 3): palm + fingertip goal positions (reach only); start_grasped: the episode
    starts with the object grasped and lifted (place); stages: intermediate goal states
    ((joints, object pose), ...) before the goal, for tasks one image cannot express (grasp:
    the hand closed around the object on the table, then lifted; pick_place: grasped, lifted,
    then placed)."""

    task: str
    index: int
    object: str
    object_pose: tuple[np.ndarray, float]
    goal_joints: np.ndarray
    goal_object: tuple[np.ndarray, float]
    max_steps: int
    target: np.ndarray | None = None
    goal_points: np.ndarray | None = None
    start_grasped: bool = False
    stages: tuple = ()


def check_episode(task: str, index: int) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; tasks: {TASKS}")
    if not (isinstance(index, int | np.integer) and 0 <= index < N_EPISODES):
        raise ValueError(f"episode {index!r} is not in the evaluation set: use 0..{N_EPISODES - 1}")


def _random_object(rng: np.random.Generator) -> tuple[str, np.ndarray, float]:
    name = OBJECT_NAMES[rng.integers(len(OBJECT_NAMES))]
    spec = grasps.object_spec(name)
    pos = np.array([rng.uniform(*OBJECT_X), rng.uniform(*OBJECT_Y), spec.rest_z])
    return name, pos, float(rng.uniform(-OBJECT_YAW, OBJECT_YAW))


def grasp_pose(rig, name: str, pos: np.ndarray, yaw: float, lift: float, shape: str, seed):
    """(J,) joint targets holding object `name` at `pos` + lift (raises UnreachableTarget)."""
    R = grasps.palm_rotation(grasps.grasp_yaw(grasps.object_spec(name), yaw))
    palm = grasps.palm_position(pos, R) + np.array([0.0, 0.0, lift])
    return grasps.arm_pose(rig, palm, R, seed, rig.hand_shapes(name, shape))


def _reach_goal(rig, rng, name, pos, yaw) -> tuple[np.ndarray, np.ndarray]:
    """Random reachable goal joints near the rest pose, hand above the table, in view, not
    touching anything, palm far enough from the start."""
    start = rig.commanded(rig.home)
    lo, hi = rig.joint_limits.T
    for _ in range(500):
        q = rig.home.copy()
        q[:7] += rng.normal(0.0, 0.35, 7)
        q[7:] = rng.uniform(lo[7:], lo[7:] + 0.6 * (hi[7:] - lo[7:]))
        q = np.clip(q, lo, hi)
        cmd = rig.commanded(q)
        points = rig.palm_and_tips(cmd["keypoints"], cmd["palm_pos"])
        uv = rig.camera.pixels(rig.camera.to_camera(cmd["keypoints"]), rig.size)
        moved = np.linalg.norm(cmd["palm_pos"] - start["palm_pos"])
        margin = IMAGE_MARGIN * rig.size
        if (
            cmd["keypoints"][:, 2].min() > 0.04
            and (REACH_BOX[0] <= cmd["palm_pos"]).all()
            and (cmd["palm_pos"] <= REACH_BOX[1]).all()
            and REACH_MIN_MOVE <= moved <= 0.35
            and (uv > margin).all()
            and (uv < rig.size - margin).all()
            and not rig.robot_contacts(rig.state_data(q, name, (pos, yaw)))
        ):
            return q, points
    raise RuntimeError("no valid reach goal found")  # pragma: no cover - sampling is generous


def _place_target(rng: np.random.Generator, pos: np.ndarray) -> np.ndarray | None:
    """A table position 0.15-0.25 m from `pos` inside the target area, or None."""
    for _ in range(20):
        angle, dist = rng.uniform(-np.pi, np.pi), rng.uniform(MIN_PLACE_DISTANCE, 0.25)
        target = pos + dist * np.array([np.cos(angle), np.sin(angle), 0.0])
        if TARGET_X[0] <= target[0] <= TARGET_X[1] and TARGET_Y[0] <= target[1] <= TARGET_Y[1]:
            return target
    return None


def make_episode(rig, task: str, index: int) -> Episode:
    """The seeded evaluation episode `index` of `task` for the Allegro rig."""
    check_episode(task, index)
    if rig.embodiment != "allegro":
        raise NotImplementedError(f"tasks are defined for the allegro rig, not {rig.embodiment!r}")
    rng = np.random.default_rng([_TASK_SEED[task], int(index)])
    for _ in range(100):  # resample the rare unreachable layouts
        name, pos, yaw = _random_object(rng)
        try:
            if task == "reach":
                goal, points = _reach_goal(rig, rng, name, pos, yaw)
                return Episode(
                    task,
                    index,
                    name,
                    (pos, yaw),
                    goal,
                    (pos, yaw),
                    MAX_STEPS[task],
                    goal_points=points,
                )
            grasp_pose(rig, name, pos, yaw, 0.0, "open", rig.home)  # the oracle's grasp pose
            held = (grasp_pose(rig, name, pos, yaw, 0.0, "closed", rig.home), (pos, yaw))
            lifted = pos + np.array([0.0, 0.0, GRASP_LIFT])
            lift_q = grasp_pose(rig, name, pos, yaw, GRASP_LIFT, "closed", rig.home)
            if task == "grasp":
                return Episode(task, index, name, (pos, yaw), lift_q, (lifted, yaw),
                               MAX_STEPS[task], stages=(held,))  # fmt: skip
            target = _place_target(rng, pos)
            if target is None:
                continue
            if task == "pick_place":  # the goal: released on the target, the hand hovering
                goal = grasp_pose(rig, name, target, yaw, grasps.HOVER, "release", rig.home)
            else:  # place: still held, set down on the target
                goal = grasp_pose(rig, name, target, yaw, 0.0, "closed", rig.home)
            stages = (held, (lift_q, (lifted, yaw))) if task == "pick_place" else ()
            return Episode(
                task, index, name, (pos, yaw), goal, (target, yaw), MAX_STEPS[task],
                target=target, start_grasped=task == "place", stages=stages,
            )  # fmt: skip
        except UnreachableTarget:
            continue
    raise RuntimeError(f"{task} episode {index}: no reachable layout")  # pragma: no cover


def evaluate(rig, ep: Episode) -> dict:
    """Per-step measures of the current state and whether each threshold set is met now."""
    th_d, th_s = THRESHOLDS["dexwm"], THRESHOLDS["strict"]
    if ep.task == "reach":
        palm = rig.data.site_xpos[rig.palm_site_id]
        points = rig.palm_and_tips(rig.achieved_keypoints(), palm)
        dist = float(np.linalg.norm(points - ep.goal_points, axis=1).max())
        return {"distance": dist, "dexwm": dist < th_d["reach"], "strict": dist < th_s["reach"]}
    contact = rig.hand_object_contact()
    if ep.task == "grasp":
        lift = float(rig.object_position()[2] - ep.object_pose[0][2])
        return {
            "contact": contact,
            "lift": lift,
            "dexwm": contact,
            "strict": contact and lift >= th_s["lift"],
        }
    dist = float(np.linalg.norm(rig.object_position() - ep.target))  # place, pick_place
    return {
        "distance": dist,
        "contact": contact,
        "dexwm": dist < th_d["place"],
        "strict": dist < th_s["place"],
    }


def robot_contacts(model: mujoco.MjModel, data: mujoco.MjData, robot_bodies: set[int]) -> int:
    """Number of contacts involving a robot body (self-contacts included)."""
    n = 0
    for i in range(data.ncon):
        b1 = int(model.geom_bodyid[data.contact.geom1[i]])
        b2 = int(model.geom_bodyid[data.contact.geom2[i]])
        n += b1 in robot_bodies or b2 in robot_bodies
    return n
