"""Joint-target control helpers and a keypoint-target inverse-kinematics controller.

`IK` solves for commanded joints that put chosen sites (palm, fingertips, ...) at target positions
and, optionally, one site at a target orientation, by damped least squares on MuJoCo's site
Jacobians with joint limits, a null-space pull toward a rest pose, and a private MjData (the
simulation state is never touched). Targets it cannot reach within tolerance raise
`UnreachableTarget` when asked to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import mujoco
import numpy as np


class UnreachableTarget(ValueError):
    """The IK could not bring the sites within tolerance of their targets."""


def rotation_error(R_target: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Axis-angle vector (3,) rotating R onto R_target, in the world frame."""
    quat_t, quat, err_q = np.zeros(4), np.zeros(4), np.zeros(4)
    mujoco.mju_mat2Quat(quat_t, np.ascontiguousarray(R_target).flatten())
    mujoco.mju_mat2Quat(quat, np.ascontiguousarray(R).flatten())
    neg = np.zeros(4)
    mujoco.mju_negQuat(neg, quat)
    mujoco.mju_mulQuat(err_q, quat_t, neg)
    vel = np.zeros(3)
    mujoco.mju_quat2Vel(vel, err_q, 1.0)
    return vel


class IK:
    """Damped-least-squares IK over a subset of the commanded joints.

    model: the scene model; joints: names of the commanded joints (J,), in action order, that
    the solver may set (model joints only). limits: (J, 2) joint ranges.
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        joints: Sequence[str],
        limits: np.ndarray,
        rest: np.ndarray | None = None,
    ):
        self.model = model
        self.data = mujoco.MjData(model)
        self.joints = list(joints)
        self.jids = [model.joint(n).id for n in self.joints]
        self.qadr = np.array([model.jnt_qposadr[j] for j in self.jids])
        self.dofadr = np.array([model.jnt_dofadr[j] for j in self.jids])
        self.limits = np.asarray(limits, float)
        self.rest = None if rest is None else np.asarray(rest, float)

    def site_pose(self, q: np.ndarray, site: str) -> tuple[np.ndarray, np.ndarray]:
        """World position (3,) and rotation (3, 3) of `site` at joints q (J,)."""
        self._set(q)
        s = self.data.site(site)
        return s.xpos.copy(), s.xmat.reshape(3, 3).copy()

    def _set(self, q: np.ndarray) -> None:
        self.data.qpos[self.qadr] = q
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)  # Jacobians need cdof and subtree_com

    def solve(
        self,
        q0: np.ndarray,
        positions: Mapping[str, np.ndarray],
        orientation: tuple[str, np.ndarray] | None = None,
        active: Sequence[int] | None = None,
        *,
        iters: int = 60,
        tol: float = 0.005,
        rot_weight: float = 0.3,
        damping: float = 0.03,
        max_step: float = 0.2,
        null_gain: float = 0.05,
        rot_tol: float = 0.05,
        strict: bool = False,
    ) -> tuple[np.ndarray, float]:
        """Joints (J,) that bring each site in `positions` ({site: world xyz}) to its target and,
        if given, `orientation` = (site, 3x3 world rotation). Only joints at indices `active`
        move (default all). Returns (q, error) where error is the largest position error (m);
        with strict=True raises UnreachableTarget if error > tol or the orientation error >
        rot_tol (rad).
        """
        q = np.clip(np.asarray(q0, float).copy(), self.limits[:, 0], self.limits[:, 1])
        act = np.arange(len(q)) if active is None else np.asarray(active)
        dof = self.dofadr[act]
        jacp, jacr = np.zeros((3, self.model.nv)), np.zeros((3, self.model.nv))
        err_pos = np.inf
        for _ in range(iters):
            self._set(q)
            rows, errs = [], []
            pos_errs = []
            for site, target in positions.items():
                s = self.data.site(site)
                mujoco.mj_jacSite(self.model, self.data, jacp, None, s.id)
                e = np.asarray(target, float) - s.xpos
                rows.append(jacp[:, dof].copy())
                errs.append(e)
                pos_errs.append(np.linalg.norm(e))
            rot_err = 0.0
            if orientation is not None:
                site, R_target = orientation
                s = self.data.site(site)
                mujoco.mj_jacSite(self.model, self.data, None, jacr, s.id)
                e = rotation_error(R_target, s.xmat.reshape(3, 3))
                rows.append(rot_weight * jacr[:, dof].copy())
                errs.append(rot_weight * e)
                rot_err = np.linalg.norm(e)
            err_pos = max(pos_errs) if pos_errs else 0.0
            if err_pos < tol * 0.2 and rot_err < 0.01:
                break
            J, e = np.concatenate(rows), np.concatenate(errs)  # (3k, a), (3k,)
            JJt = J @ J.T + damping**2 * np.eye(len(e))
            dq = J.T @ np.linalg.solve(JJt, e)
            if self.rest is not None and null_gain > 0:  # stay near the rest pose
                Jpinv = J.T @ np.linalg.inv(JJt)
                null = np.eye(len(act)) - Jpinv @ J
                dq += null @ (null_gain * (self.rest[act] - q[act]))
            scale = max(1.0, np.abs(dq).max() / max_step)
            q[act] = np.clip(q[act] + dq / scale, self.limits[act, 0], self.limits[act, 1])
        self._set(q)
        err_pos = max(
            (np.linalg.norm(np.asarray(t) - self.data.site(s).xpos) for s, t in positions.items()),
            default=0.0,
        )
        rot_err = 0.0
        if orientation is not None:
            site, R_target = orientation
            R_now = self.data.site(site).xmat.reshape(3, 3)
            rot_err = float(np.linalg.norm(rotation_error(R_target, R_now)))
        if strict and (err_pos > tol or rot_err > rot_tol):
            raise UnreachableTarget(
                f"IK: sites {list(positions)} end {err_pos:.3f} m / {rot_err:.2f} rad from their "
                f"targets (tolerance {tol} m / {rot_tol} rad): target out of reach"
            )
        return q, float(err_pos)


def interpolate_targets(
    start: np.ndarray, end: np.ndarray, n: int, smooth: bool = True
) -> np.ndarray:
    """(n, J) joint targets from `start` (excluded) to `end` (included); `smooth` eases in and
    out (smoothstep), so held objects see no jerk at the ends of a move."""
    w = np.arange(1, n + 1)[:, None] / n
    if smooth:
        w = w * w * (3 - 2 * w)
    return (1 - w) * np.asarray(start)[None] + w * np.asarray(end)[None]
