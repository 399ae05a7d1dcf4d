"""The scene's graspable objects: one active at a time (visible, colliding, under gravity), the
others parked under the table without collisions or gravity."""

from __future__ import annotations

import mujoco
import numpy as np

from dexwm.sim.scene import OBJECT_NAMES, OBJECTS, object_body

HIDDEN_GROUP = 5  # geom group not drawn by default: parked objects live there


class Objects:
    """Indices of every object's geom, free joint and body in a model, and what to do with them."""

    def __init__(self, m: mujoco.MjModel) -> None:
        self.geom = {n: m.geom(object_body(n) + "/geom").id for n in OBJECT_NAMES}
        self.qadr = {n: m.joint(object_body(n) + "/free").qposadr[0] for n in OBJECT_NAMES}
        self.dofadr = {n: m.joint(object_body(n) + "/free").dofadr[0] for n in OBJECT_NAMES}
        self.body = {n: m.body(object_body(n)).id for n in OBJECT_NAMES}
        self.group = {n: int(m.geom_group[g]) for n, g in self.geom.items()}

    def activate(self, m: mujoco.MjModel, name: str) -> str:
        """Model-side switch to object `name` (visible, colliding, under gravity)."""
        if name not in OBJECT_NAMES:
            raise ValueError(f"unknown object {name!r}; known: {OBJECT_NAMES}")
        for other in OBJECT_NAMES:
            g, active = self.geom[other], other == name
            m.geom_contype[g] = m.geom_conaffinity[g] = 1 if active else 0
            m.geom_group[g] = self.group[other] if active else HIDDEN_GROUP
            m.body_gravcomp[self.body[other]] = 0.0 if active else 1.0
        return name

    def pose(self, data: mujoco.MjData, name: str, pose: tuple[np.ndarray, float] | None) -> None:
        """Object `name` at pose ((x, y, z), yaw) (default: table centre), at rest; the others
        parked side by side under the table."""
        spec = OBJECTS[OBJECT_NAMES.index(name)]
        pos, yaw = pose if pose is not None else ((0.5, 0.0, spec.rest_z), 0.0)
        for i, other in enumerate(OBJECT_NAMES):
            qa, da = self.qadr[other], self.dofadr[other]
            data.qvel[da : da + 6] = 0.0
            if other == name:
                data.qpos[qa : qa + 3] = pos
                data.qpos[qa + 3 : qa + 7] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
            else:
                data.qpos[qa : qa + 7] = [0.0, 2.0 + 0.3 * i, -0.5, 1, 0, 0, 0]

    def position(self, data: mujoco.MjData, name: str) -> np.ndarray:
        """(3,) world position of the object's centre."""
        return data.xpos[self.body[name]].copy()

    def yaw(self, data: mujoco.MjData, name: str) -> float:
        """Rotation of the object about the world z axis (rad)."""
        qa = self.qadr[name]
        w, x, y, z = data.qpos[qa + 3 : qa + 7]
        return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))

    def touches(self, m: mujoco.MjModel, data: mujoco.MjData, name: str, bodies: set[int]) -> bool:
        """Is any geom of `bodies` touching object `name`?"""
        g_obj = self.geom[name]
        for i in range(data.ncon):
            g1, g2 = data.contact.geom1[i], data.contact.geom2[i]
            if g_obj in (g1, g2):
                other = g2 if g1 == g_obj else g1
                if int(m.geom_bodyid[other]) in bodies:
                    return True
        return False
