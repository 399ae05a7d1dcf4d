"""One client's planning session: the messages it may send, checked field by field, its camera,
and a private copy of the served policy (the world model itself is shared, never copied).

reset {goal_image, intrinsics?, extrinsics?, seed?, task?, goal_joints?} -> {"type": "ready"}
act {image, joints} -> {"type": "plan", targets (k, J), cost, costs, evaluations, iterations}

Every check raises `BadRequest(code, message)`; the server turns it into an error reply and the
session carries on. The schema is in docs/serving.md.
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dexwm.control.policy import Policy
from dexwm.planning.costs import OrientationCost
from dexwm.sim.camera import CalibratedCamera, Camera

MIN_IMAGE_SIDE = 16
RESET_FIELDS = {"type", "goal_image", "intrinsics", "extrinsics", "seed", "task", "goal_joints"}
ACT_FIELDS = {"type", "image", "joints"}


class BadRequest(ValueError):
    """A message the session cannot use; `code` names the kind of problem (docs/serving.md)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# ---- field checks --------------------------------------------------------------------------


def check_fields(msg: dict, allowed: set[str], required: tuple[str, ...]) -> None:
    unknown = sorted(str(k) for k in msg if k not in allowed)
    if unknown:
        raise BadRequest("bad_field", f"unknown field(s) {unknown}; allowed: {sorted(allowed)}")
    missing = [k for k in required if k not in msg]
    if missing:
        raise BadRequest("missing_field", f"missing field(s) {missing}")


def check_image(value: Any, name: str, max_side: int) -> np.ndarray:
    """A uint8 (H, W, 3) frame with MIN_IMAGE_SIDE <= H, W <= max_side."""
    if not isinstance(value, np.ndarray):
        raise BadRequest("bad_field", f"{name} must be an array, got {type(value).__name__}")
    if value.dtype != np.uint8:
        raise BadRequest("bad_dtype", f"{name} must be uint8, got {value.dtype}")
    if value.ndim != 3 or value.shape[2] != 3:
        raise BadRequest("bad_shape", f"{name} must be (H, W, 3), got {list(value.shape)}")
    h, w = value.shape[:2]
    if max(h, w) > max_side:
        raise BadRequest(
            "too_large", f"{name} is {h}x{w} px; the server accepts at most {max_side} px a side"
        )
    if min(h, w) < MIN_IMAGE_SIDE:
        raise BadRequest("bad_shape", f"{name} is {h}x{w} px; at least {MIN_IMAGE_SIDE} a side")
    return value


def check_floats(value: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A finite float array of `shape` (a list of numbers is accepted too) -> float64."""
    if isinstance(value, list | tuple):
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            raise BadRequest("bad_field", f"{name} must be a float array or a list of numbers")
        value = np.asarray(value, dtype=np.float64)
    if not isinstance(value, np.ndarray):
        raise BadRequest("bad_field", f"{name} must be a float array, got {type(value).__name__}")
    if value.dtype.kind != "f":
        raise BadRequest("bad_dtype", f"{name} must be float32 or float64, got {value.dtype}")
    if value.shape != shape:
        raise BadRequest(
            "bad_shape", f"{name} must have shape {list(shape)}, got {list(value.shape)}"
        )
    if not np.isfinite(value).all():
        raise BadRequest("not_finite", f"{name} contains NaN or inf")
    return value.astype(np.float64)


def check_intrinsics(value: Any) -> np.ndarray:
    K = check_floats(value, "intrinsics", (3, 3))
    if K[0, 0] <= 0 or K[1, 1] <= 0 or not np.allclose(K[2], [0, 0, 1]) or K[1, 0] != 0:
        raise BadRequest(
            "bad_value", "intrinsics must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]], fx, fy > 0"
        )
    return K


def check_extrinsics(value: Any) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(value, dict) or set(value) != {"position", "rotation"}:
        raise BadRequest("bad_field", "extrinsics must be a map {position: (3,), rotation: (3, 3)}")
    pos = check_floats(value["position"], "extrinsics.position", (3,))
    R = check_floats(value["rotation"], "extrinsics.rotation", (3, 3))
    if not np.allclose(R.T @ R, np.eye(3), atol=1e-3) or np.linalg.det(R) < 0:
        raise BadRequest(
            "bad_value", "extrinsics.rotation must be a rotation matrix (R^T R = I, det +1)"
        )
    return pos, R


# ---- the session ---------------------------------------------------------------------------


class FifoLock:
    """A lock granted in the order it was asked for (threading.Lock promises no order): with c
    sessions waiting, each plan waits for at most the c - 1 plans asked for before it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next = self._serving = 0

    def __enter__(self) -> FifoLock:
        with self._cond:
            ticket, self._next = self._next, self._next + 1
            while ticket != self._serving:
                self._cond.wait()
        return self

    def __exit__(self, *exc) -> None:
        with self._cond:
            self._serving += 1
            self._cond.notify_all()


@dataclass
class SessionEpisode:
    """What a policy reads of `rig.episode`: the task (selects cost terms), the index (seeds the
    planner: seed + index) and the privileged goal joints (orientation cost), when known."""

    task: str | None = None
    index: int = 0
    goal_joints: np.ndarray | None = None


@dataclass(eq=False)
class SessionRig:
    """What a policy's `reset` reads of a rig, for a robot the server does not simulate: the
    MuJoCo model and robot info (FK), the client's camera, the joint limits, the episode."""

    model: Any
    info: Any
    camera: Camera
    joint_limits: np.ndarray
    n_joints: int
    episode: SessionEpisode | None = None


def fork(policy: Policy) -> Policy:
    """A private copy of a set-up policy for one session: its per-episode state is its own, every
    torch module (the world model, its replicas, a prior's network) stays shared. `policy` is a
    template that never runs an episode itself (a used one would hold its rig)."""
    memo: dict[int, Any] = {}

    def share(obj: Any, depth: int = 0) -> None:
        if depth > 3 or not hasattr(obj, "__dict__"):
            return
        for v in vars(obj).values():
            for x in v if isinstance(v, list | tuple) else (v,):
                if isinstance(x, torch.nn.Module):
                    memo[id(x)] = x
                elif isinstance(x, Policy):
                    share(x, depth + 1)

    share(policy)
    return copy.deepcopy(policy, memo)


class Session:
    """One connection's planning state. `lock` serialises the model work of every session (one
    plan at a time); checks run before it is taken, so a bad message never waits."""

    def __init__(self, policy: Policy, rig, lock: FifoLock, max_side: int) -> None:
        self.policy, self.server_rig, self.lock, self.max_side = fork(policy), rig, lock, max_side
        self.rig: SessionRig | None = None
        self.goal_shape: tuple[int, ...] | None = None

    def _camera(self, msg: dict, size: tuple[int, int]) -> Camera:
        cam = self.server_rig.camera
        if "intrinsics" not in msg and "extrinsics" not in msg:
            return cam
        K = check_intrinsics(msg["intrinsics"]) if "intrinsics" in msg else cam.K(size)
        pos, R = check_extrinsics(msg["extrinsics"]) if "extrinsics" in msg else (cam.pos, cam.R)
        return CalibratedCamera.from_calibration(K, size, pos, R)

    def reset(self, msg: dict) -> dict:
        check_fields(msg, RESET_FIELDS, ("goal_image",))
        goal = check_image(msg["goal_image"], "goal_image", self.max_side)
        camera = self._camera(msg, goal.shape[:2])
        seed = msg.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**31:
            raise BadRequest("bad_value", f"seed must be an int in [0, 2**31), got {seed!r}")
        task = msg.get("task")
        if task is not None and not (isinstance(task, str) and len(task) <= 64):
            raise BadRequest("bad_field", "task must be a string of at most 64 characters")
        n = self.server_rig.n_joints
        goal_joints = msg.get("goal_joints")
        if goal_joints is not None:
            goal_joints = check_floats(goal_joints, "goal_joints", (n,))
        costs = getattr(self.policy, "costs", [])
        if goal_joints is None and any(
            isinstance(t, OrientationCost) and t.applies(task) for t in costs
        ):
            raise BadRequest(
                "missing_field",
                f"the served planner's orientation cost applies to task {task!r} and needs "
                "goal_joints (the goal state's joint targets)",
            )
        rig = self.rig
        if rig is None or rig.camera is not camera:  # a new camera: the policy rebuilds its FK
            r = self.server_rig
            rig = SessionRig(r.model, r.info, camera, r.joint_limits, r.n_joints)
        rig.episode = SessionEpisode(task, seed, goal_joints)
        t0 = time.perf_counter()
        with self.lock:
            t1 = time.perf_counter()
            self.goal_shape = None  # a reset that fails leaves no half-set goal behind
            try:
                self.policy.reset(rig, goal, {"image": goal})
            except ValueError as e:
                raise BadRequest("bad_value", f"reset refused: {e}") from None
            self.rig, self.goal_shape = rig, goal.shape
            t2 = time.perf_counter()
        custom = camera is not self.server_rig.camera
        return {
            "type": "ready",
            "camera": "client" if custom else "server",
            "timing": {"queue_s": t1 - t0, "reset_s": t2 - t1},
        }

    def act(self, msg: dict) -> dict:
        check_fields(msg, ACT_FIELDS, ("image", "joints"))
        if self.goal_shape is None:
            raise BadRequest("no_goal", "send reset (with the goal image) before act")
        image = check_image(msg["image"], "image", self.max_side)
        if image.shape != self.goal_shape:
            raise BadRequest(
                "bad_shape",
                f"image is {list(image.shape)}, the goal image was {list(self.goal_shape)}",
            )
        joints = check_floats(msg["joints"], "joints", (self.server_rig.n_joints,))
        t0 = time.perf_counter()
        with self.lock:
            t1 = time.perf_counter()
            targets = self.policy.act({"image": image, "commanded": joints})  # (k, J)
            t2 = time.perf_counter()
        last = getattr(self.policy, "last", {})
        return {
            "type": "plan",
            "targets": np.asarray(targets, dtype=np.float64),
            "cost": last.get("cost"),
            "costs": last.get("costs", []),
            "evaluations": last.get("evaluations", 0),
            "iterations": last.get("iterations", 0),
            "step": self.policy.stats["calls"],
            "timing": {"queue_s": t1 - t0, "plan_s": t2 - t1},
        }
