"""Batched, differentiable forward kinematics in torch, read from a MuJoCo kinematic tree.

`TreeFK` reproduces `mj_kinematics` for hinge and slide joints: body frame = parent frame x
(body_pos, body_quat), then each joint of the body in order (hinge: rotate about its axis through
its anchor by q - qpos0; slide: translate along its axis). Bodies without joints are folded into
their children at build time, and bodies at the same depth of the remaining tree are processed
together, so the cost is ~11 batched steps for the Allegro-on-Panda (7 arm + 4 finger levels)
whatever the batch size: a few ms for 512 x 3 configurations on one CPU core (bench/sim.py).

`KeypointFK` turns commanded joints into the 21 right-hand keypoints in the camera frame, the
planner's action space (DESIGN.md s.2): hand sites for hands (the Allegro's ring finger fills the
little-finger slot), DexWM's DROID mapping for the parallel gripper.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import mujoco
import numpy as np
import torch

from dexwm.embodiment import CLOSED_RADII, N_ANGLES, OPEN_RADII
from dexwm.sim.camera import Camera
from dexwm.sim.robots import GRIPPER, RobotInfo


def _quat_to_mat(quat: np.ndarray) -> np.ndarray:
    mat = np.zeros(9)
    mujoco.mju_quat2Mat(mat, np.asarray(quat, float))
    return mat.reshape(3, 3)


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch ops on one intra-op thread inside the block (restored after). FK is ~150 small
    element-wise ops: extra OpenMP threads only add synchronisation, measured up to 30x slower
    with 2 threads on a busy 2-core machine. Wrap a backward pass through FK in it as well."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _as_slice(index: list[int]) -> slice | list[int]:
    """A list of indices as a slice when it is a contiguous run (slicing is a free view)."""
    if index and index == list(range(index[0], index[0] + len(index))):
        return slice(index[0], index[0] + len(index))
    return index


def _frame_for_axis(axis: np.ndarray) -> np.ndarray:
    """A rotation Q (3, 3) with Q @ e_z = axis (unit)."""
    z = np.asarray(axis, float) / np.linalg.norm(axis)
    helper = np.array([1.0, 0, 0]) if abs(z[0]) < 0.9 else np.array([0, 1.0, 0])
    x = np.cross(helper, z)
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z], axis=1)


class TreeFK(torch.nn.Module):
    """q (N, J) of the named joints -> positions (N, S, 3) of the named sites in the world, or in
    `frame` = (position (3,), rotation (3, 3) whose columns are the frame's axes) if given, e.g.
    a camera: p_frame = R^T (p_world - position), folded into the constants at no cost.

    Joints on the sites' paths that are not named stay at `fixed_qpos` (default qpos0). Supports
    hinge and slide joints, at most one per body (true of the Panda, Allegro and Shadow models).

    Internals: each body frame is stored rotated by a constant Q_b that maps its joint axis to z,
    so a hinge is a cheap mix of two columns and a slide moves along column 2. Tensors are kept
    component-first (3, 3, bodies, N) so every op is a few contiguous element-wise passes; small
    batched 3x3 matmuls are very slow in torch on the CPU.
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        joints: Sequence[str],
        sites: Sequence[str],
        fixed_qpos: np.ndarray | None = None,
        frame: tuple[np.ndarray, np.ndarray] | None = None,
    ):
        super().__init__()
        pf, Rf = (np.zeros(3), np.eye(3)) if frame is None else map(np.asarray, frame)
        qfix = np.asarray(model.qpos0 if fixed_qpos is None else fixed_qpos, float)
        column = {model.joint(name).id: k for k, name in enumerate(joints)}
        self.n_joints = len(joints)

        def jointed(b: int) -> bool:
            return b != 0 and model.body_jntnum[b] > 0

        def collapse(b: int) -> tuple[int, np.ndarray, np.ndarray]:
            """(a, R, p): frame of body b before its joint = frame of its nearest jointed proper
            ancestor a (-1 = world) composed with the static transform (R, p)."""
            Rl, pl = _quat_to_mat(model.body_quat[b]), np.asarray(model.body_pos[b], float)
            pb = int(model.body_parentid[b])
            if pb == 0:
                return -1, Rl, pl
            if jointed(pb):
                return pb, Rl, pl
            a, Ra, pa = collapse(pb)
            return a, Ra @ Rl, Ra @ pl + pa

        def axis_frame(b: int) -> np.ndarray:
            if b == -1:
                return np.eye(3)
            return _frame_for_axis(model.jnt_axis[model.body_jntadr[b]])

        # sites hang off a jointed body (or the world) with a static offset
        site_body, site_offset = [], []
        for name in sites:
            s = model.site(name).id
            b, off = int(model.site_bodyid[s]), np.asarray(model.site_pos[s], float)
            if not jointed(b):
                b, R, p = (-1, np.eye(3), np.zeros(3)) if b == 0 else collapse(b)
                off = R @ off + p
            if b == -1:
                off = Rf.T @ (off - pf)  # static site, straight into the output frame
            site_body.append(b)
            site_offset.append(axis_frame(b).T @ off)  # in the rotated frame of its body

        # jointed bodies on the sites' paths, grouped by depth in the collapsed tree
        needed: set[int] = set()
        for b in site_body:
            while b != -1 and b not in needed:
                if model.body_jntnum[b] > 1:
                    raise NotImplementedError(f"body {model.body(b).name!r} has several joints")
                needed.add(b)
                b = collapse(b)[0]
        depth: dict[int, int] = {}
        for b in sorted(needed):  # MuJoCo body ids are topologically sorted
            a = collapse(b)[0]
            depth[b] = 0 if a == -1 else depth[a] + 1
        levels = [
            [b for b in sorted(needed) if depth[b] == d] for d in range(max(depth.values()) + 1)
        ]
        slot = {b: i for lv in levels for i, b in enumerate(lv)}

        consts: list[float] = []  # angles of joints held fixed, appended after q's columns
        self._parents: list[list[int] | None] = []
        self._hinge: list[bool] = []
        self._anchored: list[bool] = []
        self._cols: list[slice] = []
        angle_order: list[int] = []  # columns of [q - qpos0 | consts], level by level
        for d, bodies in enumerate(levels):
            n = len(bodies)
            R, p, c = np.zeros((3, 3, n, 1)), np.zeros((3, n, 1)), np.zeros((3, n, 1))
            col = np.zeros(n, np.int64)
            kinds = set()
            for i, b in enumerate(bodies):
                a, Rl, pl = collapse(b)
                if a == -1:  # placed in the world: express in the output frame
                    Rl, pl = Rf.T @ Rl, Rf.T @ (pl - pf)
                Qp, Qb = axis_frame(a), axis_frame(b)
                R[..., i, 0], p[:, i, 0] = Qp.T @ Rl @ Qb, Qp.T @ pl
                j = int(model.body_jntadr[b])
                kinds.add(int(model.jnt_type[j]))
                c[:, i, 0] = Qb.T @ model.jnt_pos[j]
                if j in column:
                    col[i] = column[j]
                else:
                    qadr = int(model.jnt_qposadr[j])
                    col[i] = self.n_joints + len(consts)
                    consts.append(qfix[qadr] - model.qpos0[qadr])
            hinge, slide = int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE)
            if kinds not in ({hinge}, {slide}):  # one joint type per level keeps ops uniform
                raise NotImplementedError(
                    f"level {d}: joint types {kinds}, need all hinge or slide"
                )
            self._hinge.append(kinds == {hinge})
            self._anchored.append(bool(np.abs(c).max() > 0) and kinds == {hinge})
            par = [slot[collapse(b)[0]] for b in bodies] if d else None
            prev = len(levels[d - 1]) if d else 0
            if par is not None and (par == list(range(prev)) or (prev == 1)):
                par = None  # identity or broadcast from a single parent: no gather needed
            self._parents.append(par)
            for key, val in dict(R=R, p=p, c=c).items():
                self.register_buffer(f"{key}{d}", torch.tensor(val))
            start = sum(len(lv) for lv in levels[:d])
            self._cols.append(slice(start, start + n))  # rows of this level in the angle table
            angle_order.extend(col.tolist())
        self.n_levels = len(levels)
        self.register_buffer("angle_order", torch.tensor(angle_order))
        qpos0 = [model.qpos0[model.jnt_qposadr[model.joint(n).id]] for n in joints]
        self.register_buffer("qpos0", torch.tensor(np.asarray(qpos0, float)))
        self.register_buffer("consts", torch.tensor(np.asarray(consts, float)))
        # sites grouped by level: (level, slots, offsets (3, k, 1), output positions)
        self._site_groups = []
        for d in [-1, *range(self.n_levels)]:
            members = [k for k, b in enumerate(site_body) if (depth[b] if b != -1 else -1) == d]
            if members:
                slots = [slot[site_body[k]] if d != -1 else 0 for k in members]
                off = np.stack([site_offset[k] for k in members], axis=1)[..., None]  # (3, k, 1)
                self.register_buffer(f"site_off{d + 1}", torch.tensor(off))
                self._site_groups.append((d, _as_slice(slots), members))
        order = [k for _, _, members in self._site_groups for k in members]
        self._site_order = _as_slice(np.argsort(order).tolist())

    def _constants(self, dtype: torch.dtype, device: torch.device) -> dict:
        """Buffers cast to (dtype, device), cached so the forward pass does no conversions."""
        key = (dtype, device)
        if getattr(self, "_cache_key", None) != key:
            self._cache = {
                name: buf.to(device=device, dtype=dtype if buf.is_floating_point() else None)
                for name, buf in self.named_buffers()
            }
            self._cache_key = key
        return self._cache

    def _apply(self, fn, recurse=True):  # .to() / .double() etc. invalidate the cache
        self._cache_key = None
        return super()._apply(fn, recurse)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        """q (N, J) joint positions -> (N, S, 3) world site positions (q's dtype)."""
        if q.ndim != 2 or q.shape[1] != self.n_joints:
            raise ValueError(f"q must be (N, {self.n_joints}), got {tuple(q.shape)}")
        if q.device.type != "cpu":
            return self._forward(q)
        with single_thread():
            return self._forward(q)

    def _forward(self, q: torch.Tensor) -> torch.Tensor:
        c = self._constants(q.dtype, q.device)
        N = q.shape[0]
        angles = torch.cat([q - c["qpos0"], c["consts"].expand(N, -1)], dim=1)  # (N, J + C)
        angles = angles[:, c["angle_order"]].T.contiguous()  # (bodies, N), level by level
        Rw: list[torch.Tensor] = []  # per level (3, 3, n, N): rotated body frames
        pw: list[torch.Tensor] = []  # per level (3, n, N): body origins
        for d in range(self.n_levels):
            Rs, ps = c[f"R{d}"], c[f"p{d}"]  # (3, 3, n, 1), (3, n, 1): static parent -> body
            if d == 0:  # children of the world
                R, p = Rs.expand(-1, -1, -1, N), ps.expand(-1, -1, N)
            else:
                Rp, pp = Rw[-1], pw[-1]  # (3, 3, n', N), (3, n', N)
                if self._parents[d] is not None:
                    Rp, pp = Rp[:, :, self._parents[d]], pp[:, self._parents[d]]
                R = (Rp[:, :, None] * Rs[None]).sum(1)  # (3, 3, n, N) = Rp @ Rs
                p = pp + (Rp * ps[None]).sum(1)  # (3, n, N) = pp + Rp @ ps
            th = angles[self._cols[d]]  # (n, N)
            if self._hinge[d]:  # rotation about the (rotated) local z axis
                if self._anchored[d]:
                    anchor = p + (R * c[f"c{d}"][None]).sum(1)  # joint anchor, world
                cos, sin = torch.cos(th), torch.sin(th)
                x, y = R[:, 0], R[:, 1]  # (3, n, N) columns
                R = torch.stack([cos * x + sin * y, cos * y - sin * x, R[:, 2]], dim=1)
                if self._anchored[d]:
                    p = anchor - (R * c[f"c{d}"][None]).sum(1)
            else:  # translation along the (rotated) local z axis
                p = p + R[:, 2] * th
            Rw.append(R)
            pw.append(p)
        out = []
        for d, slots, _ in self._site_groups:
            off = c[f"site_off{d + 1}"]  # (3, k, 1)
            if d == -1:
                out.append(off.expand(-1, -1, N))
            else:
                R, p = Rw[d][:, :, slots], pw[d][:, slots]  # (3, 3, k, N), (3, k, N)
                out.append(p + (R * off[None]).sum(1))
        sites = torch.cat(out, dim=1)[:, self._site_order]  # (3, S, N)
        return sites.permute(2, 1, 0)  # (N, S, 3)


class KeypointFK(torch.nn.Module):
    """Commanded joints q (N, J) -> right-hand keypoints (N, 21, 3) in the OpenCV camera frame.

    Hands: the 21 keypoint sites (the Allegro's ring sites are listed twice, filling the little
    slot). Parallel gripper (J = 8, last = closure in [0, 1]): DexWM's DROID mapping around the
    TCP (`dexwm.embodiment.gripper_keypoints`), whose radii switch at closure 0.5 (no gradient
    through the closure). Differentiable in q otherwise.
    """

    def __init__(self, model: mujoco.MjModel, info: RobotInfo, camera: Camera):
        super().__init__()
        self.gripper = info.gripper
        joints = [j for j in info.joints if j != GRIPPER]
        if self.gripper:  # TCP in the world: the finger circles lie in the world's xy plane
            unique, index, frame = [info.palm_site], [0], None
        else:  # hand sites straight in the camera frame
            unique = list(dict.fromkeys(info.keypoint_sites))
            index, frame = [unique.index(s) for s in info.keypoint_sites], (camera.pos, camera.R)
        self.tree = TreeFK(model, joints, unique, frame=frame)
        self.n_joints = len(info.joints)
        self._index = index
        self.register_buffer("cam_pos", torch.tensor(camera.pos))
        self.register_buffer("cam_R", torch.tensor(camera.R))
        self._camera = camera

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        """q (N, J) -> (N, 21, 3) keypoints in the camera frame (metres)."""
        if q.ndim != 2 or q.shape[1] != self.n_joints:
            raise ValueError(f"q must be (N, {self.n_joints}), got {tuple(q.shape)}")
        if q.device.type != "cpu":
            return self._keypoints(q)
        with single_thread():  # every op here is small: see single_thread
            return self._keypoints(q)

    def _keypoints(self, q: torch.Tensor) -> torch.Tensor:
        if not self.gripper:
            return self.tree(q)[:, self._index]  # (N, 21, 3), camera frame already
        tcp = self.tree(q[:, :-1])[:, 0]  # (N, 3) world
        closed = (q[:, -1:] >= 0.5).to(q.dtype)  # (N, 1)
        radii = closed * q.new_tensor(CLOSED_RADII) + (1 - closed) * q.new_tensor(OPEN_RADII)
        theta = 2 * torch.pi * torch.arange(N_ANGLES, dtype=q.dtype, device=q.device) / N_ANGLES
        ring = torch.stack([torch.cos(theta), torch.sin(theta), torch.zeros_like(theta)], -1)
        offsets = radii[:, None, :, None] * ring[None, :, None, :]  # (N, 5, 4, 3)
        fingers = tcp[:, None, None, :] + offsets
        pts = torch.cat([tcp[:, None], fingers.reshape(-1, 20, 3)], dim=1)  # (N, 21, 3) world
        pos, R = self.cam_pos.to(pts), self.cam_R.to(pts)
        return (pts - pos) @ R  # rows: p_cam = R^T (p - pos)

    def pixels(self, points_cam: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
        """(..., 3) camera-frame points -> (..., 2) pixels of frames of `size`."""
        K = torch.as_tensor(self._camera.K(size), dtype=points_cam.dtype)
        z = points_cam[..., 2:].clamp_min(1e-6)
        return points_cam[..., :2] / z * K[[0, 1], [0, 1]] + K[:2, 2]
