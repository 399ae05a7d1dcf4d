"""The closed loop on the rig: policies (MPC through a world model, baselines, goal-conditioned
BC), joint space -> model actions, the model rollout handed to the planners, episodes and their
evaluation harness, and data aggregation rounds.

    from dexwm.control import evaluate, load_policies, MPCPolicy
    from dexwm.planning import CEM
    res = evaluate([MPCPolicy(CEM(samples=64, iterations=3))], tasks=["reach"], episodes=5,
                   checkpoint="runs/x/checkpoints/last.ckpt", out="runs/plan/eval")
"""

from dexwm.control.episodes import evaluate, load_policies, run_episode
from dexwm.control.joint_space import JointSpace
from dexwm.control.model_rollout import ModelRollout, replicate, split_sizes
from dexwm.control.policy import MPCPolicy, Policy
from dexwm.control.staged import Staged

__all__ = [
    "JointSpace", "MPCPolicy", "ModelRollout", "Policy", "evaluate", "load_policies",
    "Staged", "replicate", "run_episode", "split_sizes",
]  # fmt: skip
