"""The scene shared by every embodiment: table, graspable objects, light, fixed camera.

World frame: robot base (or the Shadow hand's root region) at the origin, z up, the table top at
z = 0 in front of the robot (+x), the camera in front-right looking back at the workspace. Same
scene, same camera for all embodiments, so their videos are comparable.

Rendering is set up for the CPU: no shadows, no reflections, no multisampling, coarse meshes.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from dexwm.sim import robots
from dexwm.sim.camera import look_at

TIMESTEP = 0.002  # physics step (s); a 10 Hz control step is 50 of them
TABLE_TOP = 0.0
TABLE_CENTRE, TABLE_HALF = (0.35, 0.0), (0.6, 0.65)
TABLE_HALF_THICKNESS = 0.1
CAMERA_NAME = "front"
CAMERA_POS = (1.15, -0.62, 0.62)
CAMERA_TARGET = (0.48, -0.03, 0.15)
CAMERA_FOVY = 48.0
MAX_RENDER = 256  # offscreen buffer side: supports 128 and 224 px frames


@dataclass(frozen=True)
class ObjectSpec:
    """A graspable primitive. half: MuJoCo geom size (box half extents, cylinder radius + half
    height, sphere radius). rest_z: height of the centre when resting upright on the table."""

    name: str
    kind: str
    half: tuple[float, ...]
    rgba: tuple[float, float, float, float]
    mass: float

    @property
    def rest_z(self) -> float:
        return TABLE_TOP + (self.half[0] if self.kind == "sphere" else self.half[-1])


OBJECTS = (
    ObjectSpec("cube", "box", (0.025, 0.025, 0.025), (0.85, 0.12, 0.1, 1), 0.06),
    ObjectSpec("cube_large", "box", (0.03, 0.03, 0.03), (0.1, 0.3, 0.85, 1), 0.08),
    ObjectSpec("cylinder", "cylinder", (0.027, 0.03), (0.1, 0.7, 0.25, 1), 0.06),
    ObjectSpec("block", "box", (0.045, 0.022, 0.025), (0.95, 0.6, 0.05, 1), 0.07),
)
OBJECT_NAMES = tuple(o.name for o in OBJECTS)
_GEOM_TYPE = {
    "box": mujoco.mjtGeom.mjGEOM_BOX,
    "cylinder": mujoco.mjtGeom.mjGEOM_CYLINDER,
    "sphere": mujoco.mjtGeom.mjGEOM_SPHERE,
}

# Rest poses. Allegro: palm down 22 cm above the table centre, fingers pointing to the robot's
# right (toward the camera), the posture every task starts from.
ALLEGRO_HOME_ARM = (0.19, 0.43, 0.15, -2.15, -1.32, 1.35, 0.26)
PANDA_HOME_ARM = (0.0, 0.1, 0.0, -2.2, 0.0, 2.3, 0.785)
SHADOW_HOME_ROOT = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def object_body(name: str) -> str:
    return f"obj/{name}"


def _add_objects(spec: mujoco.MjSpec) -> None:
    for i, obj in enumerate(OBJECTS):
        # parked side by side off the table until an episode activates one
        body = spec.worldbody.add_body(name=object_body(obj.name), pos=[0.0, 2.0 + 0.3 * i, 0.1])
        body.add_freejoint(name=object_body(obj.name) + "/free")
        body.add_geom(
            name=object_body(obj.name) + "/geom",
            type=_GEOM_TYPE[obj.kind],
            size=list(obj.half) + [0.0] * (3 - len(obj.half)),
            rgba=list(obj.rgba),
            mass=obj.mass,
            friction=[1.5, 0.01, 0.002],  # sliding, torsional, rolling: nothing rolls away
            condim=4,
            group=1,
        )


def _add_stage(spec: mujoco.MjSpec) -> None:
    world = spec.worldbody
    (cx, cy), (hx, hy) = TABLE_CENTRE, TABLE_HALF
    world.add_geom(
        name="table",
        type=mujoco.mjtGeom.mjGEOM_BOX,
        size=[hx, hy, TABLE_HALF_THICKNESS],  # thick: nothing is pushed through it
        pos=[cx, cy, TABLE_TOP - TABLE_HALF_THICKNESS],
        rgba=[0.72, 0.62, 0.5, 1],
        friction=[1.0, 0.01, 0.001],
    )
    world.add_geom(
        name="floor",
        type=mujoco.mjtGeom.mjGEOM_PLANE,
        size=[4, 4, 0.1],
        pos=[0, 0, TABLE_TOP - 0.75],
        rgba=[0.35, 0.37, 0.4, 1],
        contype=0,
        conaffinity=0,
    )
    world.add_light(name="key", pos=[0.6, -0.4, 2.0], dir=[-0.1, 0.2, -1], castshadow=False)
    world.add_light(
        name="fill",
        pos=[1.6, -1.2, 1.2],
        dir=[-1, 0.8, -0.6],
        castshadow=False,
        diffuse=[0.35, 0.35, 0.35],
    )
    R = look_at(np.array(CAMERA_POS), np.array(CAMERA_TARGET))
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, R.flatten())
    world.add_camera(name=CAMERA_NAME, pos=list(CAMERA_POS), quat=list(quat), fovy=CAMERA_FOVY)


def build_spec(
    embodiment: str, menagerie: str | None = None
) -> tuple[mujoco.MjSpec, robots.RobotInfo]:
    """MjSpec of the full scene with `embodiment` in it, and that robot's `RobotInfo`."""
    if embodiment not in robots.EMBODIMENTS:
        raise ValueError(f"unknown embodiment {embodiment!r}; known: {robots.EMBODIMENTS}")
    spec = mujoco.MjSpec()
    spec.modelname = f"dexwm_{embodiment}"
    spec.compiler.degree = False  # joint ranges below are in radians
    spec.option.timestep = TIMESTEP
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    spec.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    spec.option.impratio = 10.0
    spec.visual.quality.offsamples = 0  # multisampling off
    spec.visual.quality.shadowsize = 0
    spec.visual.global_.offwidth = spec.visual.global_.offheight = MAX_RENDER
    spec.visual.headlight.ambient = [0.35, 0.35, 0.35]
    spec.visual.headlight.diffuse = [0.45, 0.45, 0.45]
    _add_stage(spec)
    _add_objects(spec)
    if embodiment == "allegro":
        info = robots.build_allegro(spec, menagerie, ALLEGRO_HOME_ARM)
    elif embodiment == "shadow":
        info = robots.build_shadow(spec, menagerie, SHADOW_HOME_ROOT)
    else:
        info = robots.build_panda_gripper(spec, menagerie, PANDA_HOME_ARM)
    return spec, info


def build_model(
    embodiment: str, menagerie: str | None = None
) -> tuple[mujoco.MjModel, robots.RobotInfo]:
    """Compiled MjModel of the scene with `embodiment`, and its `RobotInfo`."""
    spec, info = build_spec(embodiment, menagerie)
    return spec.compile(), info


def descends(model: mujoco.MjModel, body: int, root: int) -> bool:
    """Is `body` `root` or one of its descendants in the kinematic tree?"""
    while body > 0:
        if body == root:
            return True
        body = int(model.body_parentid[body])
    return False
