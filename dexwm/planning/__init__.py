"""Planning: pure batched planners (CEM, MPPI, gradient, chains of them) and cost terms over a
rollout callable and a cost callable. No simulator, no files, no logging: the closed loop that
uses them on the rig lives in `dexwm.control`.
"""

from dexwm.planning.base import Planner, PlanResult, shift_plan
from dexwm.planning.cem import CEM
from dexwm.planning.costs import (
    FeatureCost,
    KeypointCost,
    Objective,
    OrientationCost,
    PoseCost,
)
from dexwm.planning.gradient import Chain, GradientPlanner
from dexwm.planning.mppi import MPPI

__all__ = [
    "CEM", "MPPI", "Chain", "FeatureCost", "GradientPlanner", "KeypointCost", "Objective",
    "OrientationCost", "PlanResult", "Planner", "PoseCost", "shift_plan",
]  # fmt: skip
