"""Goal-pose head: where the goal image puts the robot, as joint targets, for `PoseCost`.

The feature cost compares 8x8 grids of features; a reach plan that ends 3 cm from the goal and
one that ends 10 cm away look alike on it. This head reads the goal image's features and
estimates the joint targets of the robot shown (J,); FK of those gives the goal hand's keypoints
in 3D, and `PoseCost` measures the plan's own FK keypoints against them: exact on the plan's
side, so its precision is the head's.

Training data, nothing privileged at planning time (the head sees the goal image only):
- the exploration episodes' cached features and commanded joints (as BC trains on);
- static pose frames: random joint configurations of the exploration's `pose` segments
  (`dexwm.sim.explore.random_pose`: arm near rest, random finger shape, hand above the table),
  rendered at rest with the object placed at random and encoded with the same encoder. In motion
  the frame lags the commanded joints; at rest it shows exactly them.

Loss: mean distance (m) between FK of the estimate and FK of the true joints over the 21 hand
keypoints, plus a small normalised joint term (the arm's null space leaves the keypoints alone).
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dexwm.keypoints import FINGERTIPS, WRIST

HEAD_POINTS = [WRIST, *FINGERTIPS]


@dataclass
class GoalPoseConfig:
    num_tokens: int
    feat_dim: int
    n_joints: int = 23
    token_dim: int = 32  # per-token compression of the features
    hidden: int = 1024
    dropout: float = 0.1


class GoalPoseNet(nn.Module):
    """Raw encoder features (B, N, D) -> joint targets (B, J); statistics stored as buffers."""

    def __init__(self, cfg: GoalPoseConfig) -> None:
        super().__init__()
        self.cfg = cfg
        N, D, J = cfg.num_tokens, cfg.feat_dim, cfg.n_joints
        self.reduce = nn.Linear(D, cfg.token_dim)
        self.mlp = nn.Sequential(
            nn.Linear(N * cfg.token_dim, cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden, cfg.hidden // 2), nn.GELU(), nn.Linear(cfg.hidden // 2, J),
        )  # fmt: skip
        for name, dim in (("feat", D), ("joint", J)):
            self.register_buffer(f"{name}_mean", torch.zeros(dim))
            self.register_buffer(f"{name}_std", torch.ones(dim))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        if feats.ndim != 3 or feats.shape[1:] != (self.cfg.num_tokens, self.cfg.feat_dim):
            raise ValueError(
                f"features must be (B, {self.cfg.num_tokens}, {self.cfg.feat_dim}), "
                f"got {tuple(feats.shape)}"
            )
        x = self.reduce((feats - self.feat_mean) / self.feat_std).flatten(1)
        return self.mlp(x) * self.joint_std + self.joint_mean


def pose_frames(
    rig, n: int, seed: int = 0, start: int = 0, progress: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Static frames start..start+n-1 of random poses (`dexwm.sim.explore.random_pose`), the
    object at a random spot of the exploration area -> (images (n, S, S, 3) uint8, joints (n, J)
    float32); frame i depends on (seed, i) only."""
    from tqdm import tqdm

    from dexwm.sim.explore import Explorer, random_object

    explorer, images, joints = Explorer(rig), [], []
    for i in tqdm(range(start, start + n), desc="pose frames", disable=not progress):
        rng = np.random.default_rng([seed, i])
        name, pose = random_object(rng)
        q = None
        while q is None:
            q = explorer.random_pose(rng, rig.home)
        images.append(rig.render(None, rig.state_data(q, name, pose)))
        joints.append(q)
    return np.stack(images), np.stack(joints).astype(np.float32)


def _fk(rig):
    from dexwm.control.joint_space import JointSpace

    return JointSpace.from_rig(rig)


def hand_error(space, q_est: torch.Tensor, q_true: torch.Tensor) -> torch.Tensor:
    """(M,) largest distance (m) over the right wrist + 5 fingertips between FK of two joint
    sets (M, J): the reach task's measure, with the wrist for the palm."""
    a = space.keypoints(space.clip(q_est))[:, HEAD_POINTS]
    b = space.keypoints(space.clip(q_true))[:, HEAD_POINTS]
    return (a - b).norm(dim=-1).amax(-1)


def error_breakdown(space, q_est: torch.Tensor, q_true: torch.Tensor) -> dict:
    """Where a goal-pose estimate (M, J) misses, as medians over M (m): each head point (wrist,
    then the thumb..little fingertips), and the largest-point error (`hand_error`) with only the
    arm estimated (the true finger joints) and with only the fingers estimated (the true arm
    joints): which of the two limits the head."""
    a = space.keypoints(space.clip(q_est))[:, HEAD_POINTS]
    b = space.keypoints(space.clip(q_true))[:, HEAD_POINTS]
    n = space.n_arm
    arm_only, fingers_only = q_true.clone(), q_est.clone()
    arm_only[:, :n] = q_est[:, :n]
    fingers_only[:, :n] = q_true[:, :n]
    return {
        "points_median_m": (a - b).norm(dim=-1).median(0).values.tolist(),
        "arm_only_median_m": float(hand_error(space, arm_only, q_true).median()),
        "fingers_only_median_m": float(hand_error(space, fingers_only, q_true).median()),
    }


def _encode(encoder, images: np.ndarray, batch: int = 64) -> np.ndarray:
    with torch.no_grad():
        out = [
            encoder(torch.from_numpy(images[i : i + batch])) for i in range(0, len(images), batch)
        ]
    return torch.cat(out).to(torch.float16).numpy()


def train_goal_pose(
    shards: list[str] | str,
    out: str,
    poses: int = 30000,
    steps: int = 4000,
    batch_size: int = 256,
    lr: float = 1e-3,
    joint_weight: float = 0.05,
    val_fraction: float = 0.1,
    seed: int = 0,
    goal_tasks: list[str] = ("reach",),  # noqa: B006 (read-only)
    progress: bool = True,
) -> dict:
    """Train the goal-pose head on exploration shards with cached features (and `poses` static
    pose frames, rendered and encoded with the shards' encoder, cached beside `out` as
    `<out>.poses.npz`); saves {state_dict, config, encoder, history, val} of the step with the
    lowest validation error to `out`. Validation: the last `val_fraction` of the pose frames
    (largest wrist/fingertip distance, median and share under 3 cm / 15 cm). Reported, not used:
    the error on the goal images of the evaluation tasks `goal_tasks`."""
    from tqdm import tqdm

    from dexwm.data.feature_cache import load_feature_episodes
    from dexwm.io import atomic_write_bytes
    from dexwm.models.encoders import FrozenEncoder
    from dexwm.sim import Rig

    if steps < 10:
        raise ValueError(f"steps must be >= 10, got {steps}")
    eps = load_feature_episodes(shards)
    if not eps:
        raise ValueError(f"no episodes with features in {shards}")
    spec = eps[0]["encoder"]
    if not spec:
        raise ValueError(
            "the shards' meta.json names no encoder: cache them with data_prep.cache_features"
        )
    keys = ("name", "weights", "input_size", "stage")
    spec = {k: spec[k] for k in keys if k in spec}
    # the encoder (timm, which imports triton) before any rendering: importing triton after an
    # EGL context exists segfaults
    encoder = FrozenEncoder(spec) if poses > 0 else None
    rig = Rig("allegro", size=int(spec["input_size"][0]))
    space = _fk(rig)
    F = np.concatenate([e["feats"] for e in eps])
    Q = np.concatenate([e["joints"] for e in eps])
    if Q.shape[1] != space.n_joints:
        raise ValueError(f"shards hold {Q.shape[1]} joints, the Allegro rig {space.n_joints}")
    val_f = val_q = None
    if poses > 0:
        cache = Path(f"{out}.poses.npz")
        have = None
        if cache.is_file():
            z = np.load(cache)
            if (
                int(z["seed"]) == seed
                and len(z["joints"]) == poses
                and str(z["encoder"]) == str(spec)
            ):
                have = (z["feats"], z["joints"])
        if have is None:
            feats, joints = [], []
            for c in range(0, poses, 2000):  # render and encode in chunks: bounded memory
                images, q = pose_frames(rig, min(2000, poses - c), 10_000 + seed, c, progress)
                feats.append(_encode(encoder, images))
                joints.append(q)
            feats, joints = np.concatenate(feats), np.concatenate(joints)
            buf = io.BytesIO()
            np.savez(buf, feats=feats, joints=joints, seed=seed, encoder=str(spec))
            atomic_write_bytes(cache, buf.getvalue())
            have = (feats, joints)
        n_val = max(1, int(round(val_fraction * poses)))
        val_f, val_q = have[0][-n_val:], have[1][-n_val:]
        F = np.concatenate([F, have[0][:-n_val]])
        Q = np.concatenate([Q, have[1][:-n_val]])
    N, D = F.shape[1:]
    cfg = GoalPoseConfig(N, D, Q.shape[1])
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    net = GoalPoseNet(cfg)
    sub = F[:: max(1, len(F) // 4000)].reshape(-1, D).astype(np.float32)
    net.feat_mean.copy_(torch.from_numpy(sub.mean(0)))
    net.feat_std.copy_(torch.from_numpy(sub.std(0)).clamp_min(1e-4))
    net.joint_mean.copy_(torch.from_numpy(Q.mean(0)))
    net.joint_std.copy_(torch.from_numpy(Q.std(0)).clamp_min(1e-3))
    if val_f is None:  # no pose frames: hold out exploration frames
        n_val = max(1, int(round(val_fraction * len(F))))
        F, Q, val_f, val_q = F[:-n_val], Q[:-n_val], F[-n_val:], Q[-n_val:]
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    warm = max(0.05, 2.0 / steps)  # OneCycleLR needs >= 1 warm-up step
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=warm)

    def validate() -> dict:
        net.eval()
        with torch.no_grad():
            est = torch.cat([net(torch.from_numpy(val_f[i : i + 512]).float())
                             for i in range(0, len(val_f), 512)])  # fmt: skip
            err = hand_error(space, est, torch.from_numpy(val_q))
        net.train()
        return {"median_m": float(err.median()), "under_3cm": float((err < 0.03).float().mean()),
                "under_15cm": float((err < 0.15).float().mean())}  # fmt: skip

    history, best = [], (float("inf"), None, None)
    for step in tqdm(range(steps), desc="goal-pose head", disable=not progress):
        i = rng.integers(0, len(F), batch_size)
        f, q = torch.from_numpy(F[i]).float(), torch.from_numpy(Q[i])
        est = net(f)
        kp_err = (space.keypoints(space.clip(est)) - space.keypoints(q)).norm(dim=-1).mean()
        loss = kp_err + joint_weight * ((est - q) / net.joint_std).square().mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"goal-pose head: loss {loss.item()} at step {step}")
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % max(1, steps // 10) == 0 or step + 1 == steps:
            v = validate()
            history.append({"step": step + 1, "train_m": kp_err.item(), **v})
            if v["median_m"] < best[0]:
                best = (v["median_m"], {k: t.clone() for k, t in net.state_dict().items()}, v)
    net.load_state_dict(best[1])
    net.eval()
    goal_error = {t: goal_image_error(rig, space, net, encoder or FrozenEncoder(spec), t)
                  for t in goal_tasks}  # fmt: skip
    buf = io.BytesIO()
    torch.save({"state_dict": best[1], "config": asdict(cfg), "encoder": spec,
                "history": history, "val": best[2], "goal_error": goal_error}, buf)  # fmt: skip
    atomic_write_bytes(out, buf.getvalue())
    return {"frames": len(F), "val": best[2], "goal_error": goal_error, "history": history}


@torch.no_grad()
def goal_image_error(rig, space, net: GoalPoseNet, encoder, task: str) -> dict:
    """The head on the goal images of all evaluation episodes of `task` (reported, never used
    for training or model selection): the largest wrist/fingertip distance between FK of its
    estimate and FK of the goal joints, median / 90th percentile (m) and shares under 3 / 15 cm,
    and where it misses (`error_breakdown`)."""
    from dexwm.sim.tasks import N_EPISODES, make_episode

    images, joints = [], []
    for i in range(N_EPISODES):
        ep = make_episode(rig, task, i)
        images.append(rig.goal_image(task, i))
        joints.append(ep.goal_joints)
    est = net(encoder(torch.from_numpy(np.stack(images))).float())
    true = torch.as_tensor(np.stack(joints), dtype=torch.float32)
    err = hand_error(space, est, true)
    return {"episodes": len(err), "median_m": float(err.median()),
            "p90_m": float(err.quantile(0.9)), "under_3cm": float((err < 0.03).float().mean()),
            "under_15cm": float((err < 0.15).float().mean()),
            **error_breakdown(space, est, true)}  # fmt: skip


class GoalPoseEstimator:
    """A trained goal-pose head with its encoder: goal image (H, W, 3) uint8 -> joints (J,)."""

    def __init__(self, checkpoint: str) -> None:
        from dexwm.models.encoders import FrozenEncoder

        if not Path(checkpoint).is_file():
            raise FileNotFoundError(
                f"no goal-pose head at {checkpoint}: train one with `python plan.py goal_pose "
                "--shards FEATURES --out PATH`"
            )
        ck = torch.load(checkpoint, map_location="cpu", weights_only=True)
        self.net = GoalPoseNet(GoalPoseConfig(**ck["config"]))
        self.net.load_state_dict(ck["state_dict"])
        self.net.eval().requires_grad_(False)
        self.encoder = FrozenEncoder(ck["encoder"])
        self.val = ck.get("val")

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> torch.Tensor:
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3:
            raise ValueError("the goal image must be a uint8 (H, W, 3) array")
        return self.net(self.encoder(torch.from_numpy(image)[None]).float())[0]
