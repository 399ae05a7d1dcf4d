"""Grasp geometry of the Allegro rig: a palm-down fingertip grasp, shared by the scripted oracle
and the goal states of the tasks.

Palm frame (site `kp_palm`): x = palm normal (down when grasping), y lateral, z along the fingers.
The object is held between the thumb tip and the index/middle/ring tips at its centre height:
the palm face sits `DEPTH` above the object centre, the centre `AHEAD` in front of the palm site
along the fingers. Hand shapes come from the keypoint IK (fingertip targets in the palm frame), so
they adapt to each object's width: open = `CLEARANCE` outside the object, closed = `SQUEEZE` inside
it (the position servos then press with their torque limit). Values were tuned on the four objects
(see bench/sim_oracle.py for the resulting success rates).
"""

from __future__ import annotations

import numpy as np

from dexwm.sim.scene import OBJECT_NAMES, OBJECTS, ObjectSpec

DEPTH, AHEAD = 0.08, 0.05  # object centre in the palm frame: (DEPTH, 0, AHEAD)
CLEARANCE, SQUEEZE, LATERAL = 0.015, 0.006, 0.015  # m; LATERAL = index/ring offset from middle
RELEASE = 0.04  # m, fingertip clearance when letting go (wider than the approach)
FINGER_YAW = -np.pi / 2  # nominal finger direction in the world: the robot's right (-y)
HOVER = 0.08  # pre-grasp height of the palm above its grasp pose
TIP_INDEX = {"thumb": 4, "index": 8, "middle": 12, "ring": 16}  # keypoint indices
HAND_SEED = (0.0, 0.6, 0.6, 0.6) * 3 + (1.0, 0.6, 0.5, 0.5)  # IK start for hand shapes


def object_spec(name: str) -> ObjectSpec:
    return OBJECTS[OBJECT_NAMES.index(name)]


def half_width(spec: ObjectSpec) -> float:
    """Half the object's extent along the squeeze direction (box: its short horizontal side)."""
    return spec.half[0] if spec.kind in ("cylinder", "sphere") else min(spec.half[:2])


def grasp_yaw(spec: ObjectSpec, object_yaw: float) -> float:
    """Deviation (rad) of the finger direction from FINGER_YAW so the fingers squeeze across a
    face: boxes are symmetric under 90 deg turns (180 deg for the block, squeezed across its short
    side), cylinders under any turn. Result in [-pi/4, pi/4] (block: [-pi/2, pi/2])."""
    if spec.kind in ("cylinder", "sphere"):
        return 0.0
    square = abs(spec.half[0] - spec.half[1]) < 1e-9
    # the block's short side is its local y axis: fingers along local y = FINGER_YAW + yaw
    period = np.pi / 2 if square else np.pi
    return float((object_yaw + period / 2) % period - period / 2)


def palm_rotation(yaw: float) -> np.ndarray:
    """World rotation (3, 3) of the palm site: normal down, fingers at FINGER_YAW + yaw."""
    x = np.array([0.0, 0.0, -1.0])
    z = np.array([np.cos(FINGER_YAW + yaw), np.sin(FINGER_YAW + yaw), 0.0])
    return np.stack([x, np.cross(z, x), z], axis=1)


def palm_position(object_pos: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Palm site position that puts the object centre at (DEPTH, 0, AHEAD) in the palm frame."""
    return np.asarray(object_pos, float) - R @ np.array([DEPTH, 0.0, AHEAD])


SHAPES = {"open": CLEARANCE, "closed": -SQUEEZE, "release": RELEASE}


class HandShapes:
    """Allegro hand shapes per object ("open", "closed", "release"), solved once with the rig's
    keypoint IK: fingertips SHAPES[shape] m outside the object's faces (negative = inside)."""

    def __init__(self, rig):
        self.rig = rig
        self._cache: dict[tuple[str, str], np.ndarray] = {}

    def __call__(self, name: str, shape: str) -> np.ndarray:
        """(16,) hand joint targets: fingertips around object `name` in `shape`."""
        if shape not in SHAPES:
            raise ValueError(f"shape must be one of {tuple(SHAPES)}")
        if (name, shape) not in self._cache:
            self._cache[name, shape] = self._solve(name, SHAPES[shape])
        return self._cache[name, shape].copy()

    def _solve(self, name: str, clearance: float) -> np.ndarray:
        rig = self.rig
        q0 = np.concatenate([rig.home[:7], HAND_SEED])
        cmd = rig.commanded(q0)
        palm, R = cmd["palm_pos"], cmd["palm_rot"]
        d = half_width(object_spec(name)) + clearance
        local = {  # fingertip targets in the palm frame
            "thumb": (DEPTH, 0.0, AHEAD - d),
            "index": (DEPTH, LATERAL, AHEAD + d),
            "middle": (DEPTH, 0.0, AHEAD + d),
            "ring": (DEPTH, -LATERAL, AHEAD + d),
        }
        sites = rig.info.keypoint_sites
        targets = {sites[TIP_INDEX[k]]: palm + R @ np.array(v) for k, v in local.items()}
        q, _ = rig.ik.solve(q0, targets, None, active=range(7, 23), iters=200, null_gain=0.0)
        return q[7:]


def arm_pose(rig, palm_pos: np.ndarray, R: np.ndarray, seed: np.ndarray, hand: np.ndarray):
    """(23,) targets: arm IK for the palm site at (palm_pos, R) from `seed`, hand = `hand`.
    Raises UnreachableTarget (dexwm.sim.control) when the arm cannot get there."""
    q, _ = rig.ik.solve(
        seed,
        {rig.info.palm_site: palm_pos},
        (rig.info.palm_site, R),
        active=range(7),
        iters=150,
        tol=0.01,
        strict=True,
    )
    q[7:] = hand
    return q
