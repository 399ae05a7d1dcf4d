"""The simulator as a perfect model: the rollout callable of the perfect-model ceiling.

    rollout = SimRollout(rig, encode, space)     # at the current state of the rig
    pred = rollout(plans)                        # plans (B, H, J) -> Prediction

Each candidate is executed on the rig from the current state (restored exactly before each
candidate, and after the last), every step is rendered and encoded with the same frozen encoder
and normaliser the learned model uses, so the same planners and costs run on the true future
instead of a predicted one. It also records the task's true distance after each step
(`Prediction.distance`), for the privileged diagnostic cost. About (B x H) control steps of
physics and rendering per call: a ceiling to measure, not a planner to deploy.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from dexwm.control.joint_space import JointSpace
from dexwm.planning.costs import Prediction


def task_distance(rig) -> float:
    """The task's own progress measure after the last step: reach: palm + fingertips to their
    goal (max, m); grasp: palm + fingertips to the goal state's (m); place / pick_place: object
    centre to the target (m)."""
    ep = rig.episode
    if ep.task in ("place", "pick_place"):
        return float(np.linalg.norm(rig.object_position() - ep.target))
    palm = rig.data.site_xpos[rig.palm_site_id]
    points = rig.palm_and_tips(rig.achieved_keypoints(), palm)
    return float(np.linalg.norm(points - goal_points(rig), axis=1).max())


def goal_points(rig) -> np.ndarray:
    """(6, 3) palm + fingertip positions of the episode's goal state (world)."""
    ep = rig.episode
    if ep.goal_points is not None:
        return ep.goal_points
    cmd = rig.commanded(ep.goal_joints)
    return rig.palm_and_tips(cmd["keypoints"], cmd["palm_pos"])


class SimRollout:
    """rig: the rig at the state to plan from; encode: uint8 frames (M, H, W, 3) -> normalised
    features (M, N, D) (the world model's `encode`); space: the rig's joint space."""

    def __init__(
        self, rig, encode: Callable[[torch.Tensor], torch.Tensor], space: JointSpace
    ) -> None:
        if rig.episode is None:
            raise ValueError("the perfect model plans inside a task episode: rig.reset(task, i)")
        self.rig, self.encode, self.space = rig, encode, space
        self.start = rig.snapshot()
        self.q0 = torch.as_tensor(rig.target, dtype=torch.float32)

    def __call__(self, plans: torch.Tensor) -> Prediction:
        _, kp, q = self.space.actions(self.q0, plans.detach())  # (B, H+1, 21, 3), (B, H, J)
        B, H = q.shape[:2]
        frames, distance = [], np.zeros((B, H), np.float32)
        for b in range(B):
            self.rig.restore(self.start)
            for t in range(H):
                frames.append(self.rig.step(q[b, t].numpy().astype(np.float64))["image"])
                distance[b, t] = task_distance(self.rig)
        self.rig.restore(self.start)
        feats = self.encode(torch.from_numpy(np.stack(frames)))  # (B * H, N, D)
        return Prediction(
            feats.reshape(B, H, *feats.shape[1:]).cpu(), kp, q, torch.from_numpy(distance)
        )
