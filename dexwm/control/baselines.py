"""Baselines in the same harness as the planners: hold still, random actions and the scripted
oracle (privileged upper bound). The learned baseline, goal-conditioned BC, is in `bc.py`."""

from __future__ import annotations

import numpy as np

from dexwm.control.policy import Policy


class HoldPolicy(Policy):
    """Keeps the current joint targets (what success looks like without moving)."""

    name = "hold"

    def __init__(self, name: str = "hold") -> None:
        self.name = name

    def act(self, obs: dict) -> np.ndarray:
        return obs["commanded"][None].copy()


class RandomPolicy(Policy):
    """A random walk of joint targets: each step adds N(0, std) (rad), clipped to the limits.
    Defaults: the exploration data's jitter."""

    def __init__(
        self, std_arm: float = 0.08, std_hand: float = 0.1, seed: int = 0, name: str = "random"
    ) -> None:
        self.std_arm, self.std_hand, self.seed, self.name = std_arm, std_hand, seed, name

    def reset(self, rig, goal_image: np.ndarray, obs: dict) -> None:
        super().reset(rig, goal_image, obs)
        n = rig.info.n_arm
        self.std = np.r_[np.full(n, self.std_arm), np.full(rig.n_joints - n, self.std_hand)]
        self.limits = rig.joint_limits
        self.rng = np.random.default_rng([self.seed, rig.episode.index if rig.episode else 0])

    def act(self, obs: dict) -> np.ndarray:
        q = obs["commanded"] + self.rng.normal(0.0, self.std)
        return np.clip(q, *self.limits.T)[None]


class OraclePolicy(Policy):
    """The sim's scripted expert (privileged state): an upper bound for the planners."""

    def __init__(self, name: str = "oracle") -> None:
        self.name = name

    def reset(self, rig, goal_image: np.ndarray, obs: dict) -> None:
        from dexwm.sim.oracle import Oracle

        super().reset(rig, goal_image, obs)
        self.oracle = Oracle(rig)

    def act(self, obs: dict) -> np.ndarray:
        return self.oracle.act()[None]
