"""Staged goals: tasks one goal image cannot express (grasp: the hand closed around the object on
the table, then lifted; pick_place: grasped, lifted, placed) give a sequence of goal images
(`Rig.goal_images`), and the wrapped policy pursues them in turn.

The stage is done once the policy's own distance to the stage's goal image (`goal_distance`)
has stopped improving: no relative improvement of more than `tolerance` over the last `patience`
decisions, after at least `min_steps` control steps in the stage. No privileged state is used:
the decision is made from the camera frames and the goal images alone.
"""

from __future__ import annotations

import numpy as np

from dexwm.control.policy import Policy


class Staged(Policy):
    """policy: the policy that pursues each stage's goal image; tasks: the tasks whose stages it
    follows (others: the final goal image only, as the plain policy)."""

    def __init__(
        self,
        policy: Policy,
        tasks: list[str] | None = None,
        min_steps: int = 6,
        patience: int = 3,
        tolerance: float = 0.03,
        name: str | None = None,
    ) -> None:
        if min_steps < 0 or patience < 1 or tolerance < 0:
            raise ValueError("need min_steps >= 0, patience >= 1, tolerance >= 0")
        self.policy, self.tasks = policy, None if tasks is None else list(tasks)
        self.min_steps, self.patience, self.tolerance = min_steps, patience, tolerance
        self.name = name or policy.name

    def check(self) -> None:
        self.policy.check()

    def setup(self, checkpoint: str | None) -> None:
        self.policy.setup(checkpoint)

    def reset(self, rig, goal_image: np.ndarray, obs: dict) -> None:
        ep = rig.episode
        staged = ep is not None and ep.stages and (self.tasks is None or ep.task in self.tasks)
        self.goals = rig.goal_images(ep.task, ep.index, goal_image.shape[0]) if staged else []
        self.goals = self.goals or [goal_image]
        self.stage, self.steps, self.stage_steps, self.seen = 0, 0, 0, []
        self.switches: list[int] = []
        self.policy.reset(rig, self.goals[0], obs)
        self.stats = self.policy.stats

    def _stage_done(self, obs: dict) -> bool:
        d = self.policy.goal_distance(obs)
        if d is None:
            return False
        self.seen.append(d)
        if self.stage_steps < self.min_steps or len(self.seen) <= self.patience:
            return False
        before = min(self.seen[: -self.patience])
        return min(self.seen[-self.patience :]) > before * (1 - self.tolerance)

    def act(self, obs: dict) -> np.ndarray:
        if self.stage + 1 < len(self.goals) and self._stage_done(obs):
            self.stage += 1
            self.switches.append(self.steps)
            self.policy.retarget(self.goals[self.stage], obs)
            self.seen, self.stage_steps = [], 0
        out = np.atleast_2d(self.policy.act(obs))
        self.steps += len(out)
        self.stage_steps += len(out)
        self.stats["stage"] = self.stage
        return out
