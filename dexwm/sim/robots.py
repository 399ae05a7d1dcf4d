"""The three simulated embodiments, built from the Menagerie files with MjSpec.

- `allegro`: Franka Panda (7 joints) + Wonik Allegro right hand (16 joints) on its flange: the rig
  users deploy on. Commanded joints = 7 arm + 16 hand = 23.
- `shadow`: a free-floating Shadow right hand (3 slide + 3 hinge root joints + its 24 joints = 30),
  standing in for human video.
- `panda_gripper`: the Panda with its parallel gripper (7 arm joints + gripper closure in [0, 1]),
  standing in for non-dexterous robot data; keypoints follow DexWM's DROID mapping.

Every robot body gets gravity compensation (as the real controllers do) so position targets are
tracked without sag. The Panda's detailed visual meshes (~130k triangles) are dropped and its
coarse collision meshes (~2k triangles) are shown instead, and the hands' meshes are decimated
(dexwm.sim.meshes): triangle count is the main render-speed lever on a CPU.
Keypoint sites (21 per hand, MediaPipe/MANO order) are added to the model so tests can compare
batched FK against MuJoCo's own site positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from dexwm.sim.assets import model_file
from dexwm.sim.meshes import decimate_meshes

EMBODIMENTS = ("allegro", "shadow", "panda_gripper")
MAX_MESH_FACES = 1000  # hand meshes above this are decimated (render cost ~ triangles)
FINGER_NAMES = ("thumb", "index", "middle", "ring", "little")


@dataclass(frozen=True)
class RobotInfo:
    """What the rest of the simulator needs to know about an embodiment (names, not ids).

    joints: commanded joints in action order (J,); for the gripper the last entry is the gripper
        actuator's name and its command is a closure in [0, 1].
    keypoint_sites: 21 site names (MANO order; the Allegro's ring sites fill the little slot),
        empty for the gripper (keypoints come from `dexwm.embodiment.gripper_keypoints`).
    palm_site: the end-effector / palm site (position + orientation used for ee.npy and IK).
    hand_root: body whose subtree counts as "the hand" in contact tests.
    home: joint targets of the rest pose (J,).
    """

    name: str
    joints: tuple[str, ...]
    keypoint_sites: tuple[str, ...]
    palm_site: str
    hand_root: str
    home: tuple[float, ...]
    n_arm: int
    gripper: bool = False


# ---- Panda arm ------------------------------------------------------------------------------

PANDA_PREFIX = "panda/"
PANDA_JOINTS = tuple(f"{PANDA_PREFIX}joint{i}" for i in range(1, 8))


def _panda(file: str, menagerie: str | None) -> mujoco.MjSpec:
    """Panda spec with coarse collision meshes shown as visuals and gravity compensation."""
    spec = mujoco.MjSpec.from_file(str(model_file(file, menagerie)))
    for geom in list(spec.geoms):
        if geom.classname.name in ("visual", "panda/visual"):
            spec.delete(geom)
    used = {g.meshname for g in spec.geoms}
    for mesh in list(spec.meshes):
        if mesh.name not in used:
            spec.delete(mesh)
    for geom in spec.geoms:  # the collision geoms double as (coarse) visuals
        geom.group = 2
        dark = geom.parent.name in ("link7", "hand", "left_finger", "right_finger")
        geom.rgba = [0.3, 0.3, 0.32, 1] if dark else [0.92, 0.92, 0.92, 1]
        geom.material = ""
    for body in spec.bodies:
        if body.name:
            body.gravcomp = 1.0
    for light in list(spec.lights):
        spec.delete(light)
    for key in list(spec.keys):
        spec.delete(key)
    return spec


# ---- Allegro ----------------------------------------------------------------------------------

ALLEGRO_PREFIX = "allegro/"
_ALLEGRO_FINGERS = {"index": "ff", "middle": "mf", "ring": "rf"}
# (body, local position) per keypoint; fingertip sites sit near the end of the tip capsule.
_ALLEGRO_SITES = {
    "wrist": ("palm", (-0.009, 0.0, -0.095)),
    "thumb1": ("th_base", (0.0, 0.0, 0.0)),
    "thumb2": ("th_medial", (0.0, 0.0, 0.0)),
    "thumb3": ("th_distal", (0.0, 0.0, 0.0)),
    "thumb4": ("th_tip", (0.0, 0.0, 0.051)),
    **{
        f"{finger}{k}": (f"{p}_{body}", pos)
        for finger, p in _ALLEGRO_FINGERS.items()
        for k, body, pos in (
            (1, "proximal", (0, 0, 0)),
            (2, "medial", (0, 0, 0)),
            (3, "distal", (0, 0, 0)),
            (4, "tip", (0, 0, 0.036)),
        )
    },
    "palm": ("palm", (0.0113, 0.0, -0.045)),  # centre of the inner palm face
}
# The hand is bolted to the flange turned 180 deg about the flange axis: with this mount the
# palm-down grasp poses the tasks need sit mid-range in joint 7 (Menagerie's default mount leaves
# joint 7 at its limit there).
ALLEGRO_MOUNT_QUAT = (0.0, 0.0, 0.0, 1.0)
ALLEGRO_KP, ALLEGRO_KV, ALLEGRO_MAX_TORQUE = 30.0, 1.5, 1.0
ALLEGRO_ARMATURE = 0.002  # kg m^2
ALLEGRO_HOME_HAND = (0.0, 0.25, 0.25, 0.25) * 3 + (0.7, 0.25, 0.25, 0.25)


def _allegro_keypoint_names() -> tuple[str, ...]:
    order = ["wrist"] + [f"{f}{k}" for f in FINGER_NAMES for k in range(1, 5)]
    # Allegro has no little finger: DexWM copies the ring finger into its slot.
    return tuple(PANDA_PREFIX + ALLEGRO_PREFIX + "kp_" + n.replace("little", "ring") for n in order)


def build_allegro(spec: mujoco.MjSpec, menagerie: str | None, home_arm) -> RobotInfo:
    """Attach Panda + Allegro to the scene `spec` (robot base at the world origin)."""
    arm = _panda("panda_nohand", menagerie)
    hand = mujoco.MjSpec.from_file(str(model_file("allegro_right", menagerie)))
    decimate_meshes(hand, MAX_MESH_FACES)
    palm = hand.body("palm")
    for joint in list(palm.joints):  # the Menagerie hand floats; ours is bolted to the flange
        hand.delete(joint)
    palm.pos = [0.0, 0.0, 0.095]  # palm base flush with the flange
    palm.quat = list(ALLEGRO_MOUNT_QUAT)
    for body in hand.bodies:
        if body.name:
            body.gravcomp = 1.0
    for joint in hand.joints:  # motor inertia: keeps the stiff finger servos stable at 2 ms
        joint.armature = ALLEGRO_ARMATURE
    for act in hand.actuators:  # Menagerie's kv=8 gives a 0.33 s lag; 0.05 s tracks at 10 Hz
        act.gainprm[0] = ALLEGRO_KP
        act.biasprm[1], act.biasprm[2] = -ALLEGRO_KP, -ALLEGRO_KV
        act.forcerange = [-ALLEGRO_MAX_TORQUE, ALLEGRO_MAX_TORQUE]
        act.forcelimited = 1
    # Neighbouring fingers squeezed side by side around an object interpenetrate and can fling
    # it away: no contacts between the index, middle and ring fingers (thumb contacts stay).
    links = ("base", "proximal", "medial", "distal", "tip")
    for a, b in (("ff", "mf"), ("mf", "rf"), ("ff", "rf")):
        for la in links:
            for lb in links:
                hand.add_exclude(bodyname1=f"{a}_{la}", bodyname2=f"{b}_{lb}")
    for name, (body, pos) in _ALLEGRO_SITES.items():
        hand.body(body).add_site(name="kp_" + name, pos=list(pos), size=[0.004], group=4)
    hand.option.cone = arm.option.cone  # avoid an attach conflict warning
    arm.attach(hand, prefix=ALLEGRO_PREFIX, site=arm.site("attachment_site"))
    spec.attach(arm, prefix=PANDA_PREFIX, frame=spec.worldbody.add_frame())
    hand_joints = tuple(
        PANDA_PREFIX + ALLEGRO_PREFIX + f"{p}j{i}"
        for p in ("ff", "mf", "rf", "th")
        for i in range(4)
    )
    return RobotInfo(
        name="allegro",
        joints=PANDA_JOINTS + hand_joints,
        keypoint_sites=_allegro_keypoint_names(),
        palm_site=PANDA_PREFIX + ALLEGRO_PREFIX + "kp_palm",
        hand_root=PANDA_PREFIX + ALLEGRO_PREFIX + "palm",
        home=tuple(home_arm) + ALLEGRO_HOME_HAND,
        n_arm=7,
    )


# ---- Shadow -----------------------------------------------------------------------------------

SHADOW_PREFIX = "shadow/"
_SHADOW_TIP = (0.0, 0.0, 0.026)
_SHADOW_SITES = {
    "wrist": ("rh_palm", (0.0, 0.0, 0.0)),
    "thumb1": ("rh_thbase", (0, 0, 0)),
    "thumb2": ("rh_thhub", (0, 0, 0)),
    "thumb3": ("rh_thdistal", (0, 0, 0)),
    "thumb4": ("rh_thdistal", (0.0, 0.0, 0.03)),
    **{
        f"{finger}{k}": (f"rh_{p}{body}", pos)
        for finger, p in (("index", "ff"), ("middle", "mf"), ("ring", "rf"), ("little", "lf"))
        for k, body, pos in (
            (1, "proximal", (0, 0, 0)),
            (2, "middle", (0, 0, 0)),
            (3, "distal", (0, 0, 0)),
            (4, "distal", _SHADOW_TIP),
        )
    },
    "palm": ("rh_palm", (0.0, -0.012, 0.05)),  # centre of the inner palm face
}
SHADOW_ROOT_JOINTS = ("x", "y", "z", "rx", "ry", "rz")
SHADOW_ROOT_KP = (2000.0, 200.0)  # slides (N/m), hinges (N m/rad): a stiff "arm" for the hand
SHADOW_FINGER_KP = 2.0
# Root frame at the forearm's elbow end; at zero root joints the palm faces down 20 cm above the
# table centre with the fingers pointing to the robot's right, like the Allegro's rest pose.
SHADOW_ROOT_POS = (0.5, 0.297, 0.222)
SHADOW_HAND_QUAT = (0.0, 0.70710678, -0.70710678, 0.0)
SHADOW_ROOT_RANGE = (
    (-0.25, 0.25),
    (-0.3, 0.2),
    (-0.15, 0.25),
    (-1.2, 1.2),
    (-1.2, 1.2),
    (-1.2, 1.2),
)


def build_shadow(spec: mujoco.MjSpec, menagerie: str | None, home_root) -> RobotInfo:
    """A free-floating Shadow right hand: 3 slide + 3 hinge root joints driven by stiff position
    servos (a stand-in for a human wrist moving freely), the hand's own 24 joints each with its
    own position servo (the Menagerie coupled-tendon actuators are replaced)."""
    hand = mujoco.MjSpec.from_file(str(model_file("shadow_right", menagerie)))
    decimate_meshes(hand, MAX_MESH_FACES)
    forearm = hand.body("rh_forearm")
    for joint in list(forearm.joints):
        hand.delete(joint)
    for act in list(hand.actuators):
        hand.delete(act)
    for key in list(hand.keys):
        hand.delete(key)
    for body in hand.bodies:
        if body.name:
            body.gravcomp = 1.0
    for name, (body, pos) in _SHADOW_SITES.items():
        hand.body(body).add_site(name="kp_" + name, pos=list(pos), size=[0.004], group=4)
    hand_joints = [j.name for j in hand.joints]
    for name in hand_joints:
        joint = hand.joint(name)
        hand.add_actuator(
            name="a_" + name,
            target=name,
            trntype=mujoco.mjtTrn.mjTRN_JOINT,
            gaintype=mujoco.mjtGain.mjGAIN_FIXED,
            biastype=mujoco.mjtBias.mjBIAS_AFFINE,
            gainprm=[SHADOW_FINGER_KP] + [0] * 9,
            biasprm=[0, -SHADOW_FINGER_KP, -0.1] + [0] * 7,
            ctrlrange=list(joint.range),
            forcerange=[-5, 5],
        )
    hand.option.cone = spec.option.cone
    # root chain: slide x, y, z then hinge x, y, z, one light body per joint
    body = spec.worldbody.add_body(name=SHADOW_PREFIX + "root", pos=list(SHADOW_ROOT_POS))
    for i, name in enumerate(SHADOW_ROOT_JOINTS):
        if i:
            body = body.add_body(name=f"{SHADOW_PREFIX}root_{name}")
        body.gravcomp = 1.0
        body.mass, body.inertia, body.explicitinertial = 0.05, [1e-4] * 3, True
        slide = i < 3
        body.add_joint(
            name=SHADOW_PREFIX + name,
            type=mujoco.mjtJoint.mjJNT_SLIDE if slide else mujoco.mjtJoint.mjJNT_HINGE,
            axis=list(np.eye(3)[i % 3]),
            range=list(SHADOW_ROOT_RANGE[i]),
            damping=20.0 if slide else 2.0,
            armature=0.05 if slide else 0.01,
        )
    spec.attach(hand, prefix=SHADOW_PREFIX, frame=body.add_frame(quat=list(SHADOW_HAND_QUAT)))
    for i, name in enumerate(SHADOW_ROOT_JOINTS):
        kp = SHADOW_ROOT_KP[i >= 3]
        spec.add_actuator(
            name=f"{SHADOW_PREFIX}a_{name}",
            target=SHADOW_PREFIX + name,
            trntype=mujoco.mjtTrn.mjTRN_JOINT,
            gaintype=mujoco.mjtGain.mjGAIN_FIXED,
            biastype=mujoco.mjtBias.mjBIAS_AFFINE,
            gainprm=[kp] + [0] * 9,
            biasprm=[0, -kp, -0.1 * kp] + [0] * 7,
            ctrlrange=list(SHADOW_ROOT_RANGE[i]),
        )
    joints = tuple(SHADOW_PREFIX + n for n in SHADOW_ROOT_JOINTS) + tuple(
        SHADOW_PREFIX + n for n in hand_joints
    )
    order = ["wrist"] + [f"{f}{k}" for f in FINGER_NAMES for k in range(1, 5)]
    return RobotInfo(
        name="shadow",
        joints=joints,
        keypoint_sites=tuple(SHADOW_PREFIX + "kp_" + n for n in order),
        palm_site=SHADOW_PREFIX + "kp_palm",
        hand_root=SHADOW_PREFIX + "rh_palm",
        home=tuple(home_root) + (0.0,) * len(hand_joints),
        n_arm=6,
    )


# ---- Panda with its parallel gripper -------------------------------------------------------

GRIPPER = "gripper"  # pseudo-joint: closure in [0, 1] (0 open), drives the tendon actuator
GRIPPER_ACTUATOR = "panda/actuator8"  # Menagerie: ctrl 255 = open (fingers 4 cm each), 0 = closed
TCP_OFFSET = 0.1034  # flange-to-fingertip-centre distance along the hand's z axis


def build_panda_gripper(spec: mujoco.MjSpec, menagerie: str | None, home_arm) -> RobotInfo:
    """Attach the Panda with its parallel gripper to the scene (base at the world origin)."""
    arm = _panda("panda", menagerie)
    arm.add_exclude(bodyname1="left_finger", bodyname2="right_finger")  # they touch when closed
    arm.body("hand").add_site(name="tcp", pos=[0, 0, TCP_OFFSET], size=[0.004], group=4)
    spec.attach(arm, prefix=PANDA_PREFIX, frame=spec.worldbody.add_frame())
    return RobotInfo(
        name="panda_gripper",
        joints=PANDA_JOINTS + (GRIPPER,),
        keypoint_sites=(),
        palm_site=PANDA_PREFIX + "tcp",
        hand_root=PANDA_PREFIX + "hand",
        home=tuple(home_arm) + (0.0,),
        n_arm=7,
        gripper=True,
    )
