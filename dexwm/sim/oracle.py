"""Scripted oracles for the Allegro tasks: privileged state (object pose, goal) + IK -> joint
targets, one per 10 Hz step. They show the tasks are solvable and give an upper bound for planners.

    rig.reset("place", 7)
    oracle = Oracle(rig)
    for _ in range(rig.episode.max_steps):
        rig.step(oracle.act())
    rig.success("dexwm"), rig.success("strict")     # or run_oracle(rig, "place", 7)

Each script is a generator: a stage computes its waypoints from the live state when it starts
(e.g. the transport of `place` uses where the object actually sits in the hand).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from dexwm.sim import grasps
from dexwm.sim.control import interpolate_targets

# stage durations in control steps
APPROACH, DESCEND, SETTLE, CLOSE, GRIP, LIFT = 6, 5, 1, 5, 2, 6
TRANSPORT, LOWER, SETTLE_PLACE, RELEASE, RETREAT, REACH = 8, 5, 2, 3, 5, 8
LIFT_HEIGHT = 0.10  # m, palm raise after closing
DROP = 0.0  # m, object bottom clearance when released


class Oracle:
    """Scripted expert for the current evaluation episode of an Allegro `Rig`."""

    def __init__(self, rig):
        if rig.episode is None:
            raise RuntimeError("the oracle needs a task episode: call rig.reset(task, episode)")
        self.rig = rig
        script = {"reach": self._reach, "grasp": self._grasp, "place": self._place,
                  "pick_place": self._place}  # fmt: skip
        self._steps: Iterator[np.ndarray] = script[rig.episode.task]()
        self._last = rig.target.copy()

    def act(self) -> np.ndarray:
        """Joint targets (23,) for the next control step (the final pose is held at the end)."""
        self._last = next(self._steps, self._last)
        return self._last.copy()

    def _move(
        self, start: np.ndarray, end: np.ndarray, n: int, smooth: bool = True
    ) -> Iterator[np.ndarray]:
        yield from interpolate_targets(start, end, n, smooth)

    def _reach(self) -> Iterator[np.ndarray]:
        """Keypoint IK onto the goal palm + fingertip positions, then hold."""
        rig, ep = self.rig, self.rig.episode
        sites = [rig.info.palm_site] + [rig.info.keypoint_sites[i] for i in (4, 8, 12, 16)]
        targets = dict(zip(sites, ep.goal_points[:5]))
        q, _ = rig.ik.solve(rig.target, targets, None, iters=200, tol=0.01, null_gain=0.0)
        yield from self._move(rig.target, q, REACH)

    def _grasp(self) -> Iterator[np.ndarray]:
        """Hover above the object, descend, close the fingertips around it, lift."""
        rig = self.rig
        name, pos, yaw = rig.object, rig.object_position(), rig.object_yaw()
        R = grasp_rotation(name, yaw)
        palm = grasps.palm_position(pos, R)
        opened, closed = rig.hand_shapes(name, "open"), rig.hand_shapes(name, "closed")
        up = np.array([0.0, 0.0, 1.0])
        pre = grasps.arm_pose(rig, palm + grasps.HOVER * up, R, rig.target, opened)
        down = grasps.arm_pose(rig, palm, R, pre, opened)
        grip = np.concatenate([down[:7], closed])
        lifted = grasps.arm_pose(rig, palm + LIFT_HEIGHT * up, R, down, closed)
        yield from self._move(rig.target, pre, APPROACH)
        yield from self._move(pre, down, DESCEND)
        yield from [down] * SETTLE
        yield from self._move(down, grip, CLOSE, smooth=False)  # steady squeeze, no impact
        yield from [grip] * GRIP
        yield from self._move(grip, lifted, LIFT)
        self._lifted, self._R = lifted, R

    def _place(self) -> Iterator[np.ndarray]:
        """Grasp (unless the episode starts grasped), carry the object over the target, lower it
        and (pick_place) open the hand and retreat."""
        rig, ep = self.rig, self.rig.episode
        if ep.start_grasped:
            self._lifted, self._R = rig.target.copy(), grasp_rotation(rig.object, ep.object_pose[1])
        else:
            yield from self._grasp()
        lifted, R = self._lifted, self._R
        spec = grasps.object_spec(rig.object)
        goal_obj = np.array([ep.target[0], ep.target[1], spec.rest_z + DROP])
        up = np.array([0.0, 0.0, 1.0])
        above = grasps.arm_pose(
            rig, goal_obj + self._in_hand() + LIFT_HEIGHT * up, R, lifted, lifted[7:]
        )
        yield from self._move(lifted, above, TRANSPORT)
        # re-measure the grip once carried, so the object (not the palm) lands on the target
        lower = grasps.arm_pose(rig, goal_obj + self._in_hand(), R, above, lifted[7:])
        yield from self._move(above, lower, LOWER)
        yield from [lower] * SETTLE_PLACE  # let the arm catch up: the object rests on the table
        if ep.task == "place":  # DexWM's place ends holding the object on the target
            return
        opened = rig.hand_shapes(rig.object, "release")
        opened[12:] = rig.hand_shapes(rig.object, "open")[12:]  # thumb: no big swing
        release = np.concatenate([lower[:7], opened])
        yield from self._move(lower, release, RELEASE, smooth=False)
        retreat = grasps.arm_pose(
            rig, rig.commanded(release)["palm_pos"] + grasps.HOVER * up, R, lower, opened
        )
        yield from self._move(release, retreat, RETREAT)

    def _in_hand(self) -> np.ndarray:
        """Palm site minus object centre (world), both as the physics has them now."""
        return self.rig.data.site_xpos[self.rig.palm_site_id] - self.rig.object_position()


def grasp_rotation(name: str, object_yaw: float) -> np.ndarray:
    """Palm rotation (3, 3) of the oracle's grasp of object `name` lying at `object_yaw`."""
    return grasps.palm_rotation(grasps.grasp_yaw(grasps.object_spec(name), object_yaw))


def scripted_grasp(rig) -> None:
    """Run the oracle's grasp (approach, descend, close, lift) on the rig without rendering or
    task history: the start state of episodes that begin grasped."""
    oracle = Oracle.__new__(Oracle)
    oracle.rig = rig
    for q in oracle._grasp():
        rig.step(q, render=False)


def run_oracle(rig, task: str, episode: int, render: bool = False) -> dict:
    """Run the oracle on one evaluation episode until both threshold sets have held for
    HOLD_STEPS steps or the step budget ends. Returns per threshold set whether it succeeded and
    at which step (first step at which it had held for HOLD_STEPS), plus the frames if rendered."""
    obs = rig.reset(task, episode, render=render)
    oracle = Oracle(rig)
    frames = [obs["image"]] if render else []
    first = {"dexwm": None, "strict": None}
    for t in range(rig.episode.max_steps):
        obs = rig.step(oracle.act(), render=render)
        if render:
            frames.append(obs["image"])
        for name in first:
            if first[name] is None and rig.success(name):
                first[name] = t + 1
        if all(v is not None for v in first.values()):
            break
    return {
        "task": task,
        "episode": episode,
        "object": rig.episode.object,
        "dexwm": first["dexwm"] is not None,
        "strict": first["strict"] is not None,
        "dexwm_step": first["dexwm"],
        "strict_step": first["strict"],
        "steps": len(rig.history),
        "frames": frames,
    }
