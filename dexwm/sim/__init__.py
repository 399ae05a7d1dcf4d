"""MuJoCo simulation of the deployment rig (Wonik Allegro hand on a Franka Panda) and of two
stand-in embodiments (free-floating Shadow hand, Panda with its parallel gripper): scene, batched
forward kinematics, IK control, evaluation tasks, scripted oracles, exploration episodes.

Importing this package has no side effects; set MUJOCO_GL (e.g. `egl`) before rendering.
Model files are found at run time (dexwm.sim.assets), never stored in the repository.
"""

from dexwm.sim.kinematics import KeypointFK, TreeFK
from dexwm.sim.rig import Rig
from dexwm.sim.tasks import N_EPISODES, TASKS

__all__ = ["KeypointFK", "N_EPISODES", "Rig", "TASKS", "TreeFK"]
