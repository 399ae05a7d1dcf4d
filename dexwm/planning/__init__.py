"""Planning with a world model: planners (CEM, MPPI, gradient), joint space -> model actions,
costs, the MPC policy, baselines and the evaluation harness on the sim rig.

Importing this package has no side effects (no sim, no model loading).
"""

from dexwm.planning.actions import JointSpace
from dexwm.planning.base import Planner, PlanResult, shift_plan
from dexwm.planning.cem import CEM, cem
from dexwm.planning.costs import FeatureCost, KeypointCost, Objective, OrientationCost
from dexwm.planning.gradient import Chain, GradientPlanner, gradient_plan
from dexwm.planning.mpc import evaluate, load_policies, run_episode
from dexwm.planning.mppi import MPPI, mppi
from dexwm.planning.policy import MPCPolicy, Policy
from dexwm.planning.rollout import ModelRollout, replicate, split_sizes

__all__ = [
    "CEM", "MPPI", "Chain", "FeatureCost", "GradientPlanner", "JointSpace", "KeypointCost",
    "MPCPolicy", "ModelRollout", "Objective", "OrientationCost", "PlanResult", "Planner", "Policy",
    "cem", "evaluate", "load_policies", "gradient_plan", "mppi", "replicate", "run_episode",
    "shift_plan", "split_sizes",
]  # fmt: skip
