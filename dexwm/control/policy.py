"""Policies the evaluation harness runs on the rig, and the model-predictive one (MPC).

A policy sees the rig's observation and the goal image and returns the joint targets of the next
k control steps: (k, J). `MPCPolicy` replans every `execute` steps: encode the current frame,
warm-start from the shifted previous plan, optimise joint plans through the world model with the
configured planner and cost, execute the first `execute` targets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dexwm.control.joint_space import JointSpace
from dexwm.control.model_rollout import ModelRollout, check_model, replicate
from dexwm.control.sim_rollout import SimRollout
from dexwm.planning.base import Planner, shift_plan
from dexwm.planning.cem import CEM
from dexwm.planning.costs import (
    CostTerm,
    FeatureCost,
    Goal,
    KeypointCost,
    Objective,
    PoseCost,
    hand_frame,
)

_MODELS: dict[str, object] = {}  # checkpoint path -> WorldModel, one per process


def load_model(checkpoint: str):
    """WorldModel from a checkpoint, cached per process."""
    if checkpoint not in _MODELS:
        from dexwm.models.world_model import WorldModel

        wm = WorldModel.from_checkpoint(checkpoint).requires_grad_(False)
        check_model(wm)
        _MODELS[checkpoint] = wm
    return _MODELS[checkpoint]


class Policy:
    """reset(rig, goal_image, obs) at the start of an episode; act(obs) -> (k, J) joint targets.
    `stats` holds counters the harness reports (planning calls, candidates rolled out)."""

    name = "policy"

    def check(self) -> None:
        """Raise now if what `setup` will load is missing (called once, before any worker)."""

    def setup(self, checkpoint: str | None) -> None:
        """Load what the policy needs (called once per worker process, before any episode)."""

    def reset(self, rig, goal_image: np.ndarray, obs: dict) -> None:
        self.stats = {"calls": 0, "evaluations": 0, "iterations": 0}

    def act(self, obs: dict) -> np.ndarray:
        raise NotImplementedError

    def retarget(self, goal_image: np.ndarray, obs: dict) -> None:
        """Pursue a new goal image from now on (the next stage of a staged task), keeping
        whatever the episode has built up (warm starts, counters). Policies that ignore the goal
        image need not override it."""

    def goal_distance(self, obs: dict) -> float | None:
        """How far the current frame is from the goal image in the policy's own representation
        (None: the policy has none); used to decide when a stage is done."""
        return None

    def close(self) -> None:
        """Release what `setup` acquired beyond memory (e.g. a server connection)."""


def check_goal_image(goal: np.ndarray, obs_image: np.ndarray) -> None:
    if not isinstance(goal, np.ndarray) or goal.dtype != np.uint8 or goal.ndim != 3:
        raise ValueError("the goal image must be a uint8 (H, W, 3) array")
    if goal.shape != obs_image.shape:
        raise ValueError(
            f"goal image is {goal.shape[:2]}, the camera gives {obs_image.shape[:2]}: render the "
            "goal at the observation size"
        )


class MPCPolicy(Policy):
    """Model-predictive control through a world model (DexWM's planning loop). After each `act`,
    `last` holds the plan's cost (lowest evaluated), the elites' mean cost per iteration, and the
    rollouts and iterations it took.

    Args:
        planner: CEM / MPPI / GradientPlanner / Chain (default: CEM with DexWM's settings).
        costs: cost terms (default: DexWM's feature MSE with step weights 0.6^(H-1-t)).
        horizon: planned steps H; context: observed frames C given to the model (C + H - 1 <=
            the model's max_frames keeps the shared-context fast path).
        execute: targets executed per plan before replanning.
        std_arm, std_hand: initial search std (rad) of arm / hand joint targets.
        max_step_arm, max_step_hand: largest change of a joint target per control step (rad), or
            None: keeps plans within the motion range the model was trained on.
        hold_margin: None, or hold still (repeat the current joint targets) unless the plan's
            predicted cost is lower than holding's, predicted by the same model, by more than
            this fraction; stops the search from wandering off a reached goal on model noise.
        anneal: None, or narrow the search as the goal nears: the std is scaled by the current
            frame's feature distance to the goal over the distance at the first call of the
            episode (or stage), clipped to [anneal, 1]; finer steps near the goal, where the
            full std jitters the hand by centimetres.
        warm_start: start from the previous plan shifted by `execute` (else from q_0 repeated).
        use: execute the planner's final "mean" or its "best" evaluated plan.
        prior: a policy whose plan is added to the candidates (e.g. the BC baseline), or None.
        prior_mean: centre the search on the prior's plan (the warm start becomes a candidate).
        devices: spread each call's candidates over these devices (e.g. ["cuda:0", "cuda:1"]),
            one model replica each; None: everything on the model's own device.
        model: "learned" (the world model) or "simulator": the perfect-model ceiling, every
            candidate executed on the rig (SimRollout) and encoded with the same encoder.
        per_task: settings that differ per task, e.g. {place: {std_hand: 0.01}} (DexWM keeps
            the hand nearly fixed when placing); keys: horizon, execute, std_arm, std_hand,
            max_step_arm, max_step_hand, hold_margin, anneal. "task/k" keys apply from the k-th
            `retarget` of an episode on (stage k of a `Staged` task, counted from 0), on top of
            the task's:
            e.g. {"grasp/1": {std_hand: 0.01}} keeps the closed hand fixed while lifting;
            stages may change the std, max_step, hold_margin and anneal settings only.
        goal_pose: checkpoint of a goal-pose head (`python plan.py goal_pose`), needed by
            `PoseCost`: it estimates the goal image's joints, whose FK hand points the cost uses.
        pose_proposal: where PoseCost applies, add a candidate plan that moves straight to its
            goal joints (at the step limit); the model and the costs judge it like the others.
        checkpoint: world model (default: the one given to the harness).
        seed: sampling seed (per episode: seed + episode index).
        name: label in the results table.
    """

    def __init__(
        self,
        planner: Planner | None = None,
        costs: list[CostTerm] | None = None,
        horizon: int = 3,
        context: int = 1,
        execute: int = 1,
        std_arm: float = 0.3,
        std_hand: float = 0.1,
        max_step_arm: float | None = None,
        max_step_hand: float | None = None,
        hold_margin: float | None = None,
        anneal: float | None = None,
        warm_start: bool = True,
        use: str = "mean",
        prior: Policy | None = None,
        prior_mean: bool = False,
        devices: list[str] | None = None,
        model: str = "learned",
        per_task: dict[str, dict[str, float | int | None]] | None = None,
        goal_pose: str | None = None,
        pose_proposal: bool = False,
        checkpoint: str | None = None,
        seed: int = 0,
        name: str = "mpc",
    ) -> None:
        self.planner = planner if planner is not None else CEM()
        self.planner.check()
        self.costs = costs if costs is not None else [FeatureCost()]
        if context < 1:
            raise ValueError(f"context must be >= 1, got {context}")
        search = dict(horizon=horizon, execute=execute, std_arm=std_arm, std_hand=std_hand,
                      max_step_arm=max_step_arm, max_step_hand=max_step_hand,
                      hold_margin=hold_margin, anneal=anneal)  # fmt: skip
        self.per_task = {k: dict(v) for k, v in (per_task or {}).items()}
        for task, over in self.per_task.items():
            unknown = set(over) - set(search)
            if unknown:
                raise ValueError(f"per_task[{task!r}]: unknown settings {sorted(unknown)}")
            if "/" in task:
                base, _, k = task.partition("/")
                if not k.isdigit() or {"horizon", "execute"} & set(over):
                    raise ValueError(
                        f"per_task[{task!r}]: a stage key is 'task/<stage number>' and may set "
                        "std_arm, std_hand, max_step_arm, max_step_hand, hold_margin, anneal "
                        "only"
                    )
                over = {**self.per_task.get(base, {}), **over}
            _check_search({**search, **over})
        _check_search(search)
        self.search = search
        if model not in ("learned", "simulator"):
            raise ValueError(f"model must be 'learned' or 'simulator', got {model!r}")
        self.model = model
        if use not in ("mean", "best"):
            raise ValueError(f"use must be 'mean' or 'best', got {use!r}")
        self.context, self.warm_start, self.use = context, warm_start, use
        self._apply_search(None)
        if prior_mean and prior is None:
            raise ValueError("prior_mean needs a prior policy")
        self.prior, self.prior_mean = prior, prior_mean
        if devices is not None and len(devices) == 0:
            raise ValueError("devices must be None or name at least one device")
        self.devices = [str(d) for d in devices] if devices else None
        self.checkpoint, self.seed, self.name = checkpoint, seed, name
        if goal_pose is None and any(isinstance(t, PoseCost) for t in self.costs):
            raise ValueError(f"{name}: PoseCost needs a goal-pose head (goal_pose: CHECKPOINT)")
        self.goal_pose, self.pose_head = goal_pose, None
        if pose_proposal and goal_pose is None:
            raise ValueError(
                f"{name}: pose_proposal needs a goal-pose head (goal_pose: CHECKPOINT)"
            )
        self.pose_proposal = bool(pose_proposal)
        self.pose_q = None  # PoseCost's goal joints (the head's estimate), else None
        self.wm = None
        self.replicas = None

    def _apply_search(self, task: str | None, stage: int = 0) -> None:
        """The search settings for `task` at `stage` (per_task overrides on top of the common
        ones, "task/stage" overrides on top of those)."""
        s = {**self.search, **self.per_task.get(task, {}), **self.per_task.get(f"{task}/{stage}", {})}  # fmt: skip
        self.horizon, self.execute = int(s["horizon"]), int(s["execute"])
        self.std_arm, self.std_hand = float(s["std_arm"]), float(s["std_hand"])
        arm, hand = s["max_step_arm"], s["max_step_hand"]
        self.max_step = None if arm is None else (float(arm), float(hand))
        self.hold_margin = None if s["hold_margin"] is None else float(s["hold_margin"])
        self.anneal = None if s["anneal"] is None else float(s["anneal"])
        self.start_distance = None  # goal distance at the first call of the episode or stage

    def setup(self, checkpoint: str | None) -> None:
        path = self.checkpoint or checkpoint
        if path is None:
            raise ValueError(f"{self.name}: no world-model checkpoint given")
        self.wm = load_model(str(path))
        self.replicas = replicate(self.wm, self.devices) if self.devices else None
        if self.prior is not None:
            self.prior.setup(checkpoint)
        self._setup_pose_head()

    def _setup_pose_head(self) -> None:
        if self.goal_pose is not None and self.pose_head is None:
            from dexwm.control.goal_pose import GoalPoseEstimator

            self.pose_head = GoalPoseEstimator(self.goal_pose)

    def check(self) -> None:
        if self.prior is not None:
            self.prior.check()
        if self.goal_pose is not None and not Path(self.goal_pose).is_file():
            raise FileNotFoundError(
                f"{self.name}: no goal-pose head at {self.goal_pose}: train one with "
                "`python plan.py goal_pose --shards FEATURES --out PATH`"
            )

    def use_model(self, wm) -> MPCPolicy:
        """Plan with an already loaded world model (tests, notebooks)."""
        check_model(wm)
        self.wm = wm.eval().requires_grad_(False)
        self.replicas = replicate(self.wm, self.devices) if self.devices else None
        return self

    def reset(self, rig, goal_image: np.ndarray, obs: dict) -> None:
        super().reset(rig, goal_image, obs)
        check_goal_image(goal_image, obs["image"])
        self.rig, self.stage = rig, 0
        self._apply_search(rig.episode.task if rig.episode else None)
        self.stats["holds"] = 0  # calls that kept the joints still (hold_margin)
        if getattr(self, "_space_rig", None) is not rig:
            self.space, self._space_rig = JointSpace.from_rig(rig), rig
        self._set_spread()
        self._set_goal(goal_image)
        self.history: list[tuple[torch.Tensor, torch.Tensor]] = []  # (feats, commanded joints)
        self.plan = None
        self.generator = torch.Generator().manual_seed(
            self.seed + (rig.episode.index if rig.episode else 0)
        )
        if self.prior is not None:
            self.prior.reset(rig, goal_image, obs)

    def _set_spread(self) -> None:
        """The joint space's step limit and the search std from the current settings."""
        self.space.max_step = None if self.max_step is None else self.space.spread(*self.max_step)
        self.std = self.space.spread(self.std_arm, self.std_hand)[None].expand(self.horizon, -1)

    def _set_goal(self, goal_image: np.ndarray) -> None:
        """The objective of this goal image (features encoded once, hand points if needed)."""
        wm, rig = self.wm, self.rig
        goal_feats = self._encode(goal_image)  # (N, D) on the host, like the predictions
        goal = Goal(goal_feats, task=rig.episode.task if rig.episode else None)
        goal.hand_uv = lambda feats, temp: wm.hand_points(feats, temperature=temp)  # (B, H, 6, 2)
        size = goal_image.shape[:2]
        goal.to_input_uv = lambda pts: wm.uv_to_input(self.space.fk.pixels(pts, size), size)
        if any(isinstance(t, KeypointCost) for t in self.costs):
            goal.uv = wm.hand_points(goal_feats)  # (6, 2) encoder-input pixels, right hand
        self.pose_q = None
        if any(isinstance(t, PoseCost) and t.applies(goal.task) for t in self.costs):
            self._setup_pose_head()
            self.pose_q = self.pose_head(goal_image, self.space)  # (J,) estimated goal joints
            goal.points = self.space.keypoints(self.pose_q)  # (21, 3) camera
        goal_joints = getattr(rig.episode, "goal_joints", None)  # privileged: sim episodes only
        if goal_joints is not None:  # the goal hand frame, for the orientation term
            goal.frame = hand_frame(self.space.keypoints(torch.tensor(goal_joints)))
        self.objective = Objective(self.costs, goal)

    def retarget(self, goal_image: np.ndarray, obs: dict) -> None:
        check_goal_image(goal_image, obs["image"])
        self._set_goal(goal_image)
        self.stage += 1
        self._apply_search(self.rig.episode.task if self.rig.episode else None, self.stage)
        self._set_spread()
        if self.prior is not None:
            self.prior.retarget(goal_image, obs)

    def goal_distance(self, obs: dict) -> float:
        """Mean squared difference of the current frame's features to the goal's."""
        return float((self._encode(obs["image"]) - self.objective.goal.feats).square().mean())

    def _encode(self, image: np.ndarray) -> torch.Tensor:
        """One frame -> normalised features (N, D); the last frame's are kept (an episode step
        asks for them twice when stages are checked)."""
        last = getattr(self, "_last", None)
        if last is not None and last[0] is image:
            return last[1]
        feats = self._encode_frames(torch.from_numpy(image)[None])[0]
        self._last = (image, feats)
        return feats

    def _encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (M, H, W, 3) -> normalised features (M, N, D) on the host."""
        return self.wm.encode(frames.to(self.wm.feat_norm.mean.device)).cpu()

    @torch.no_grad()
    def act(self, obs: dict) -> np.ndarray:
        feats = self._encode(obs["image"])  # (N, D)
        q0 = torch.as_tensor(obs["commanded"], dtype=torch.float32)
        self.history = (self.history + [(feats, q0)])[-self.context :]
        self.objective.goal.current = feats
        if self.model == "simulator":  # the perfect-model ceiling
            rollout = SimRollout(self.rig, self._encode_frames, self.space)
        else:
            rollout = ModelRollout(
                self.wm,
                self.space,
                torch.stack([f for f, _ in self.history]),
                torch.stack([q for _, q in self.history]),
                self.replicas,
            )
        if self.warm_start and self.plan is not None:
            mean = shift_plan(self.plan, self.execute)
        else:
            mean = q0.expand(self.horizon, -1).clone()
        std = self.std
        if self.anneal is not None:
            d = self.goal_distance(obs)  # the frame's features are cached: no second encode
            if self.start_distance is None:
                self.start_distance = d
            scale = min(1.0, d / self.start_distance) if self.start_distance > 0 else 1.0
            std = self.std * max(self.anneal, scale)
        proposals = []
        if self.prior is not None:
            prior = torch.as_tensor(self.prior.plan(obs, self.horizon), dtype=torch.float32)
            if self.prior_mean:  # search around the prior's plan; the warm start competes
                mean, prior = prior, mean
            proposals.append(prior)
        if self.pose_proposal and self.pose_q is not None:  # straight to the pose goal's joints
            proposals.append(self.space.limit(q0, self.pose_q.expand(self.horizon, -1)))
        proposals = torch.stack(proposals) if proposals else None  # (P, H, J)
        lower, upper = self.space.bounds(q0, self.horizon)  # (H, J) each
        result = self.planner(
            rollout, self.objective, mean, std, lower, upper, proposals, self.generator
        )
        plan = result.mean if self.use == "mean" else result.best
        self.plan = self.space.limit(q0, plan)  # (H, J): what the model was shown
        evaluations = result.evaluations
        if self.hold_margin is not None:  # move only if the model expects it to pay
            hold = q0.expand(self.horizon, -1)
            x = torch.stack([self.plan, hold])
            c = self.objective(rollout(x), x).reshape(-1)
            evaluations += 2
            if not c[0] < c[1] * (1.0 - self.hold_margin):
                self.plan = hold.clone()
                self.stats["holds"] += 1
        self.stats["calls"] += 1
        self.stats["evaluations"] += evaluations
        self.stats["iterations"] += result.iterations
        self.last = {
            "cost": result.best_cost,
            "costs": list(result.costs),
            "evaluations": evaluations,
            "iterations": result.iterations,
        }
        return self.plan[: self.execute].numpy().astype(np.float64)


def _check_search(s: dict) -> None:
    if s["horizon"] < 1:
        raise ValueError(f"horizon must be >= 1, got {s['horizon']}")
    if not 1 <= s["execute"] <= s["horizon"]:
        raise ValueError(f"execute must be in 1..horizon={s['horizon']}, got {s['execute']}")
    if s["std_arm"] < 0 or s["std_hand"] < 0:
        raise ValueError("std_arm and std_hand must be >= 0")
    if s["hold_margin"] is not None and not 0 <= s["hold_margin"] < 1:
        raise ValueError(f"hold_margin must be None or in [0, 1), got {s['hold_margin']}")
    if s["anneal"] is not None and not 0 < s["anneal"] <= 1:
        raise ValueError(f"anneal must be None or in (0, 1], got {s['anneal']}")
    if (s["max_step_arm"] is None) != (s["max_step_hand"] is None):
        raise ValueError("give both max_step_arm and max_step_hand, or neither")
    if s["max_step_arm"] is not None and (s["max_step_arm"] <= 0 or s["max_step_hand"] <= 0):
        raise ValueError("max_step_arm and max_step_hand must be > 0")
