"""`Rig`: one simulated embodiment in the shared scene, stepped with joint targets at 10 Hz.

    rig = Rig("allegro", size=128)
    obs = rig.reset("grasp", episode=3)        # a seeded evaluation episode
    obs = rig.step(joint_targets)              # (23,) = 7 arm + 16 hand, one 0.1 s control step
    rig.success("dexwm"), rig.success("strict")
    goal = rig.goal_image("grasp", 3)          # (H, W, 3) uint8

Actions in the data are COMMANDED keypoints (DESIGN.md s.4): every observation carries the
keypoints of the joint targets just commanded (forward kinematics of the targets, camera frame),
alongside what the physics achieved.
"""

from __future__ import annotations

import mujoco
import numpy as np

from dexwm.embodiment import gripper_keypoints, matrix_to_euler_xyz
from dexwm.keypoints import FINGERTIPS, NUM_KEYPOINTS
from dexwm.sim import tasks
from dexwm.sim.camera import Camera
from dexwm.sim.control import IK
from dexwm.sim.grasps import HandShapes
from dexwm.sim.objects import Objects
from dexwm.sim.render import Renderers
from dexwm.sim.robots import GRIPPER, GRIPPER_ACTUATOR
from dexwm.sim.scene import CAMERA_NAME, OBJECT_NAMES, build_model, descends, object_body

CONTROL_HZ = 10.0
CTRL_UPDATES = 10  # control targets are ramped in this many pieces per step
FINGER_OPEN = 0.04  # Panda finger travel (m)


class SimulationError(RuntimeError):
    """The physics diverged (non-finite state)."""


class Rig:
    """An embodiment in the scene. J = len(info.joints): 23 allegro, 30 shadow, 8 panda_gripper.

    Attributes: model, data (MuJoCo), info (RobotInfo: joint names, keypoint sites, ...),
    joint_limits (J, 2), home (J,) rest targets, target (J,) current targets, camera (Camera:
    pos, R, fovy; K(size), extrinsics()), size (default frame side), fk (batched torch FK),
    ik (keypoint-target IK), episode (tasks.Episode or None), history (per-step task measures).
    """

    def __init__(self, embodiment: str = "allegro", size: int = 128, menagerie: str | None = None):
        self.embodiment = embodiment
        self.model, self.info = build_model(embodiment, menagerie)
        self.data = mujoco.MjData(self.model)
        self.size = int(size)
        m = self.model
        self.n_substeps = int(round(1.0 / (CONTROL_HZ * m.opt.timestep)))
        self.model_joints = [j for j in self.info.joints if j != GRIPPER]
        self._qadr = np.array([m.jnt_qposadr[m.joint(j).id] for j in self.model_joints])
        by_joint = {
            int(m.actuator_trnid[a, 0]): a
            for a in range(m.nu)
            if int(m.actuator_trntype[a]) == int(mujoco.mjtTrn.mjTRN_JOINT)
        }
        self._act = np.array([by_joint[m.joint(j).id] for j in self.model_joints])
        limits = [m.jnt_range[m.joint(j).id] for j in self.model_joints]
        if self.info.gripper:
            limits.append((0.0, 1.0))
            self._grip_act = m.actuator(GRIPPER_ACTUATOR).id
            self._finger_qadr = m.jnt_qposadr[m.joint("panda/finger_joint1").id]
        self.joint_limits = np.array(limits, float)  # (J, 2)
        self.home = np.clip(np.array(self.info.home, float), *self.joint_limits.T)
        self.n_joints = len(self.info.joints)

        self._kp_sites = np.array([m.site(s).id for s in self.info.keypoint_sites], int)
        self.palm_site_id = m.site(self.info.palm_site).id
        root = m.body(self.info.hand_root).id
        self.hand_bodies = {b for b in range(m.nbody) if descends(m, b, root)}
        objects = {m.body(object_body(n)).id for n in OBJECT_NAMES}
        self.robot_bodies = set(range(1, m.nbody)) - objects
        self.objects = Objects(m)
        self.object: str | None = None  # the active object's name

        mujoco.mj_forward(m, self.data)
        cam = m.camera(CAMERA_NAME).id
        self.camera = Camera.from_mujoco(
            self.data.cam_xpos[cam], self.data.cam_xmat[cam], float(m.cam_fovy[cam])
        )
        self.ik = IK(
            m,
            self.model_joints,
            self.joint_limits[: len(self.model_joints)],
            self.home[: len(self.model_joints)],
        )
        self._kin = mujoco.MjData(m)  # scratch state for kinematics of commanded targets
        self.renderers = Renderers(m)
        self._fk = None
        self.hand_shapes = HandShapes(self) if embodiment == "allegro" else None
        self.episode: tasks.Episode | None = None
        self.target = self.home.copy()
        self.history: list[dict] = []  # per control step: measures + success flags

    # ---- state ------------------------------------------------------------------------------

    def reset(
        self,
        task: str | None = None,
        episode: int = 0,
        *,
        object_name: str | None = None,
        object_pose: tuple[np.ndarray, float] | None = None,
        joints: np.ndarray | None = None,
        render: bool = True,
    ) -> dict:
        """Start an evaluation episode (`task` in TASKS, `episode` in 0..49) or, with task=None,
        a free episode with the given object (name, ((x, y, z), yaw)) and start joints."""
        mujoco.mj_resetData(self.model, self.data)
        if task is not None:
            self.episode = tasks.make_episode(self, task, episode)
            object_name, object_pose = self.episode.object, self.episode.object_pose
        else:
            self.episode = None
        self.place_object(object_name or OBJECT_NAMES[0], object_pose)
        q = self.home if joints is None else np.clip(joints, *self.joint_limits.T)
        self._write_joints(self.data, q)
        self.target = q.copy()
        self._apply_ctrl(q)
        mujoco.mj_forward(self.model, self.data)
        if self.episode is not None and self.episode.start_grasped:
            from dexwm.sim.oracle import scripted_grasp

            scripted_grasp(self)  # the episode starts with the object grasped and lifted
        self.history = []
        return self.observe(render)

    def snapshot(self) -> dict:
        """Everything a control step changes: the full physics state, the joint targets and the
        task history. `restore(snapshot)` puts the rig back exactly (a perfect model's rollouts
        and diagnostics branch from one state)."""
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        state = np.empty(mujoco.mj_stateSize(self.model, spec))
        mujoco.mj_getState(self.model, self.data, state, spec)
        return {"state": state, "target": self.target.copy(), "history": list(self.history)}

    def restore(self, snapshot: dict) -> None:
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        mujoco.mj_setState(self.model, self.data, snapshot["state"], spec)
        mujoco.mj_forward(self.model, self.data)
        self.target = snapshot["target"].copy()
        self.history = list(snapshot["history"])

    def place_object(self, name: str, pose: tuple[np.ndarray, float] | None = None) -> None:
        """Make object `name` the active one, at pose ((x, y, z), yaw) (default: table centre);
        the others are parked out of sight, without collisions or gravity."""
        self._activate(name)
        self._pose_objects(self.data, name, pose)

    def _activate(self, name: str) -> str | None:
        """Model-side switch to object `name`; returns the previously active object."""
        previous, self.object = self.object, self.objects.activate(self.model, name)
        return previous

    def _pose_objects(self, data, name: str, pose: tuple[np.ndarray, float] | None) -> None:
        self.objects.pose(data, name, pose)

    def state_data(self, joints: np.ndarray, name: str, pose) -> mujoco.MjData:
        """A scratch MjData at joints (J,) with object `name` at `pose`, after mj_forward (so
        contacts are listed). Leaves object `name` active in the model."""
        data = mujoco.MjData(self.model)
        self._activate(name)
        self._write_joints(data, np.asarray(joints, float))
        self._pose_objects(data, name, pose)
        mujoco.mj_forward(self.model, data)
        return data

    def robot_contacts(self, data: mujoco.MjData) -> int:
        """Number of contacts touching the robot in `data`."""
        return tasks.robot_contacts(self.model, data, self.robot_bodies)

    def _write_joints(self, data: mujoco.MjData, q: np.ndarray) -> None:
        data.qpos[self._qadr] = q[: len(self.model_joints)]
        if self.info.gripper:
            width = FINGER_OPEN * (1.0 - q[-1])
            data.qpos[self._finger_qadr : self._finger_qadr + 2] = width

    def _apply_ctrl(self, q: np.ndarray) -> None:
        self.data.ctrl[self._act] = q[: len(self.model_joints)]
        if self.info.gripper:
            self.data.ctrl[self._grip_act] = 255.0 * (1.0 - q[-1])

    def joints(self) -> np.ndarray:
        """Achieved joint positions (J,) (gripper: achieved closure)."""
        q = self.data.qpos[self._qadr].copy()
        if self.info.gripper:
            q = np.append(q, 1.0 - self.data.qpos[self._finger_qadr] / FINGER_OPEN)
        return q

    def object_position(self) -> np.ndarray:
        """(3,) world position of the active object's centre."""
        return self.objects.position(self.data, self.object)

    def object_yaw(self) -> float:
        """Rotation of the active object about the world z axis (rad)."""
        return self.objects.yaw(self.data, self.object)

    def hand_object_contact(self) -> bool:
        """Is any geom of the hand touching the active object?"""
        return self.objects.touches(self.model, self.data, self.object, self.hand_bodies)

    # ---- control ----------------------------------------------------------------------------

    def step(self, joint_targets: np.ndarray, render: bool = True) -> dict:
        """One 10 Hz control step toward `joint_targets` (J,), clipped to the joint limits; the
        actuator setpoints are ramped from the previous targets over the step."""
        q = np.asarray(joint_targets, float)
        if q.shape != (self.n_joints,):
            raise ValueError(f"joint_targets must have shape ({self.n_joints},), got {q.shape}")
        if not np.isfinite(q).all():
            raise ValueError("joint_targets contain NaN/inf")
        q = np.clip(q, *self.joint_limits.T)
        start, chunk = self.target, self.n_substeps // CTRL_UPDATES
        for k in range(1, CTRL_UPDATES + 1):
            self._apply_ctrl(start + (q - start) * (k / CTRL_UPDATES))
            mujoco.mj_step(self.model, self.data, nstep=chunk)
        if not np.isfinite(self.data.qpos).all():
            raise SimulationError("physics diverged (non-finite state); reset the rig")
        self.target = q
        if self.episode is not None:
            self.history.append(tasks.evaluate(self, self.episode))
        return self.observe(render)

    @property
    def fk(self):
        """Batched torch FK of this rig (dexwm.sim.kinematics.KeypointFK): joint targets (N, J)
        -> keypoints (N, 21, 3), camera frame; differentiable. Imports torch on first use."""
        if self._fk is None:
            from dexwm.sim.kinematics import KeypointFK

            self._fk = KeypointFK(self.model, self.info, self.camera)
        return self._fk

    def extrinsics(self) -> dict:
        """Camera pose in the world (see Camera.extrinsics)."""
        return self.camera.extrinsics()

    # ---- tasks ------------------------------------------------------------------------------

    def measures(self) -> dict:
        """The task's measures at the last step: reach {distance}, grasp {contact, lift}, place
        {distance, contact}, plus whether each threshold set is met now ("dexwm", "strict")."""
        if not self.history:
            raise RuntimeError("no task step yet: reset(task, episode), then step()")
        return dict(self.history[-1])

    def success(self, thresholds: str = "dexwm") -> bool:
        """Has the task's success test ("dexwm" or "strict" thresholds, see tasks.py) held for
        the last HOLD_STEPS (10) control steps?"""
        if thresholds not in tasks.THRESHOLDS:
            raise ValueError(f"thresholds must be one of {tuple(tasks.THRESHOLDS)}")
        if self.episode is None:
            raise RuntimeError("no task episode: call reset(task, episode) first")
        recent = self.history[-tasks.HOLD_STEPS :]
        return len(recent) == tasks.HOLD_STEPS and all(r[thresholds] for r in recent)

    def goal_image(self, task: str, episode: int, size: int | None = None) -> np.ndarray:
        """(H, W, 3) uint8 render of the goal state of evaluation episode (task, episode); the
        running simulation is not disturbed."""
        return self.goal_images(task, episode, size)[-1]

    def goal_images(self, task: str, episode: int, size: int | None = None) -> list[np.ndarray]:
        """Renders of the episode's goal stages (tasks.Episode.stages), the goal itself last."""
        previous, ep = self.object, self.episode  # sampling an episode may switch objects
        if ep is None or (ep.task, ep.index) != (task, episode):
            ep = tasks.make_episode(self, task, episode)
        states = [*ep.stages, (ep.goal_joints, ep.goal_object)]
        images = [self.render(size, self.state_data(q, ep.object, pose)) for q, pose in states]
        if previous is not None:
            self._activate(previous)
        return images

    # ---- observation -------------------------------------------------------------------------

    def commanded(self, q: np.ndarray) -> dict:
        """Kinematics of joint targets q (J,): 'keypoints' (21, 3) world, 'palm_pos' (3,),
        'palm_rot' (3, 3). Computed on a scratch state, the simulation is untouched."""
        self._write_joints(self._kin, np.asarray(q, float))
        mujoco.mj_kinematics(self.model, self._kin)
        palm = self._kin.site_xpos[self.palm_site_id].copy()
        rot = self._kin.site_xmat[self.palm_site_id].reshape(3, 3).copy()
        if self.info.gripper:
            kp = gripper_keypoints(palm[None], np.array([q[-1]]))[0]
        else:
            kp = self._kin.site_xpos[self._kp_sites].copy()
        return {"keypoints": kp, "palm_pos": palm, "palm_rot": rot}

    def achieved_keypoints(self) -> np.ndarray:
        """(21, 3) world keypoints of the current physical state."""
        if self.info.gripper:
            closure = self.joints()[-1]
            return gripper_keypoints(self.data.site_xpos[self.palm_site_id][None], [closure])[0]
        return self.data.site_xpos[self._kp_sites].copy()

    def palm_and_tips(self, keypoints: np.ndarray, palm: np.ndarray) -> np.ndarray:
        """(6, 3): palm + the five fingertip keypoints (reach success points)."""
        return np.concatenate([palm[None], keypoints[list(FINGERTIPS)]])

    def ee_vector(self, cmd: dict, q: np.ndarray) -> np.ndarray:
        """(7,) palm/end-effector position + Euler xyz (world) + gripper closure (0 for hands)."""
        closure = float(q[-1]) if self.info.gripper else 0.0
        return np.concatenate([cmd["palm_pos"], matrix_to_euler_xyz(cmd["palm_rot"]), [closure]])

    def observe(self, render: bool = True, size: int | None = None) -> dict:
        """Observation dict:
        image (H, W, 3) uint8 or None; joints (J,) achieved; commanded (J,) targets;
        keypoints (2, 21, 3) commanded, camera frame (left = zeros); keypoints_uv (2, 21, 2)
        pixels at `size`; valid (2,) bool (left False, right True); achieved_keypoints (21, 3)
        camera frame; ee (7,) commanded palm pose (world) + closure; object_pos (3,) world.
        """
        size = self.size if size is None else size
        cmd = self.commanded(self.target)
        kp = np.zeros((2, NUM_KEYPOINTS, 3), np.float32)
        kp[1] = self.camera.to_camera(cmd["keypoints"])
        uv = np.zeros((2, NUM_KEYPOINTS, 2), np.float32)
        uv[1] = self.camera.pixels(kp[1], size)
        return {
            "image": self.render(size) if render else None,
            "joints": self.joints(),
            "commanded": self.target.copy(),
            "keypoints": kp,
            "keypoints_uv": uv,
            "valid": np.array([False, True]),
            "achieved_keypoints": self.camera.to_camera(self.achieved_keypoints()),
            "ee": self.ee_vector(cmd, self.target),
            "object_pos": self.object_position(),
        }

    def render(self, size: int | None = None, data: mujoco.MjData | None = None) -> np.ndarray:
        """(size, size, 3) uint8 frame from the fixed camera; shadows/reflections off."""
        return self.renderers(
            self.data if data is None else data, self.size if size is None else int(size)
        )

    def K(self, size: int | None = None) -> np.ndarray:
        """Camera intrinsics (3, 3) at frame side `size`."""
        return self.camera.K(self.size if size is None else size)

    def close(self) -> None:
        self.renderers.close()
