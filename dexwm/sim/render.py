"""Offscreen rendering from the scene's fixed camera, one MuJoCo renderer per frame size, with
shadows, reflections and the skybox off (the CPU cost is set by these, DESIGN.md s.6)."""

from __future__ import annotations

import mujoco
import numpy as np

from dexwm.sim.scene import CAMERA_NAME


class Renderers:
    def __init__(self, model: mujoco.MjModel) -> None:
        self.model = model
        self._by_size: dict[int, mujoco.Renderer] = {}

    def __call__(self, data: mujoco.MjData, size: int) -> np.ndarray:
        """(size, size, 3) uint8 frame of `data`."""
        if size not in self._by_size:
            r = mujoco.Renderer(self.model, size, size)
            for flag in ("mjRND_SHADOW", "mjRND_REFLECTION", "mjRND_SKYBOX"):
                r.scene.flags[getattr(mujoco.mjtRndFlag, flag)] = False
            self._by_size[size] = r
        r = self._by_size[size]
        r.update_scene(data, CAMERA_NAME)
        return r.render()

    def close(self) -> None:
        for r in self._by_size.values():
            r.close()
        self._by_size.clear()
