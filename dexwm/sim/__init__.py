"""MuJoCo simulation of the deployment rig (Wonik Allegro hand on a Franka Panda) and of two
stand-in embodiments (free-floating Shadow hand, Panda with its parallel gripper): scene, batched
forward kinematics, IK control, evaluation tasks, scripted oracles, exploration episodes.

Importing this package has no side effects; set MUJOCO_GL (e.g. `egl`) before rendering.
Model files are found at run time (dexwm.sim.assets), never stored in the repository.
Names are resolved lazily, so simulating and rendering never import torch (only `KeypointFK`,
`TreeFK` and `Rig.fk` need it): data-generation workers start seconds faster.
"""

from importlib import import_module

_EXPORTS = {
    "KeypointFK": "dexwm.sim.kinematics",
    "TreeFK": "dexwm.sim.kinematics",
    "Rig": "dexwm.sim.rig",
    "TASKS": "dexwm.sim.tasks",
    "N_EPISODES": "dexwm.sim.tasks",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'dexwm.sim' has no attribute {name!r}")
