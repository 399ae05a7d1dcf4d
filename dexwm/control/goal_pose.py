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

Zoom stage (`zoom` > 0): the first estimate places the hand in the image (its wrist is ~1 cm off,
its fingertips 3-4 cm: the fingers are a few pixels wide at 128 px, a few per stride-16 token);
a second head of the same kind reads a `zoom` x `zoom` pixel crop around it, magnified to the
encoder's input (128 / 56: 2.3x), plus the crop's place in the image, and estimates the joints
again. Trained on the pose frames only, cropped around the true hand with `zoom_noise` pixels of
jitter (the first stage's error).
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
    extra: int = 0  # extra inputs beside the features (the zoom stage: its crop centre, 2)


class GoalPoseNet(nn.Module):
    """Raw encoder features (B, N, D) -> joint targets (B, J); statistics stored as buffers."""

    def __init__(self, cfg: GoalPoseConfig) -> None:
        super().__init__()
        self.cfg = cfg
        N, D, J = cfg.num_tokens, cfg.feat_dim, cfg.n_joints
        self.reduce = nn.Linear(D, cfg.token_dim)
        self.mlp = nn.Sequential(
            nn.Linear(N * cfg.token_dim + cfg.extra, cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden, cfg.hidden // 2), nn.GELU(), nn.Linear(cfg.hidden // 2, J),
        )  # fmt: skip
        for name, dim in (("feat", D), ("joint", J)):
            self.register_buffer(f"{name}_mean", torch.zeros(dim))
            self.register_buffer(f"{name}_std", torch.ones(dim))

    def forward(self, feats: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """feats (B, N, D), extra (B, cfg.extra) when the config has extra inputs -> (B, J)."""
        if feats.ndim != 3 or feats.shape[1:] != (self.cfg.num_tokens, self.cfg.feat_dim):
            raise ValueError(
                f"features must be (B, {self.cfg.num_tokens}, {self.cfg.feat_dim}), "
                f"got {tuple(feats.shape)}"
            )
        x = self.reduce((feats - self.feat_mean) / self.feat_std).flatten(1)
        if self.cfg.extra:
            if extra is None or extra.shape != (len(feats), self.cfg.extra):
                raise ValueError(f"this head needs extra inputs ({len(feats)}, {self.cfg.extra})")
            x = torch.cat([x, extra.to(x.dtype)], 1)
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


def hand_centre(space, q: torch.Tensor, side: int) -> torch.Tensor:
    """(M, J) joints -> (M, 2) pixel centre (u, v) of the box around FK's 21 hand keypoints in a
    square frame of `side` pixels from the rig's camera."""
    uv = space.fk.pixels(space.keypoints(space.clip(q)), side)
    return (uv.amax(-2) + uv.amin(-2)) / 2


def zoom_crops(images: np.ndarray, centres: np.ndarray, crop: int) -> tuple[np.ndarray, np.ndarray]:
    """Square crops of `crop` pixels around `centres` (M, 2) (u, v) of images (M, S, S, 3), edge
    pixels repeated past the border -> (crops (M, crop, crop, 3), the integer centres (M, 2))."""
    c = np.round(np.asarray(centres, dtype=np.float64)).astype(int)
    lo = c - crop // 2 + crop  # top-left corner in the padded frame
    pad = np.pad(images, ((0, 0), (crop, crop), (crop, crop), (0, 0)), mode="edge")
    out = [pad[i, y : y + crop, x : x + crop] for i, (x, y) in enumerate(lo)]
    return np.stack(out), c


def _zoom_extra(centres: np.ndarray, side: int) -> torch.Tensor:
    """The zoom stage's extra input: the crop centre in [-1, 1] of the frame."""
    return torch.as_tensor((np.asarray(centres, dtype=np.float32) - side / 2) / (side / 2))


@torch.no_grad()
def estimate(net, encoder, images: np.ndarray, space=None, zoom=None) -> torch.Tensor:
    """Goal images (M, S, S, 3) uint8 -> joints (M, J): the head, then its zoom stage (a dict
    {net, crop, side}: crop pixels at frame side `side`, scaled to these images) when given."""
    q = torch.cat([net(encoder(torch.from_numpy(images[i : i + 64])).float())
                   for i in range(0, len(images), 64)])  # fmt: skip
    if zoom is None:
        return q
    side = images.shape[1]
    crop = max(1, round(zoom["crop"] * side / zoom["side"]))
    crops, c = zoom_crops(images, hand_centre(space, q, side).numpy(), crop)
    extra = _zoom_extra(c, side)
    return torch.cat([zoom["net"](encoder(torch.from_numpy(crops[i : i + 64])).float(),
                                  extra[i : i + 64]) for i in range(0, len(crops), 64)])  # fmt: skip


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


def _fit(
    net,
    F,
    Q,
    val_f,
    val_q,
    space,
    steps,
    batch_size,
    lr,
    joint_weight,
    seed,
    progress,
    desc,
    extra=None,
    val_extra=None,
):
    """Train `net` on features F (M, N, D) -> joints Q (M, J) (+ extra inputs); statistics set
    from the data -> (state dict of the step with the lowest validation error, its validation
    figures, history)."""
    from tqdm import tqdm

    D = F.shape[2]
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    sub = F[:: max(1, len(F) // 4000)].reshape(-1, D).astype(np.float32)
    net.feat_mean.copy_(torch.from_numpy(sub.mean(0)))
    net.feat_std.copy_(torch.from_numpy(sub.std(0)).clamp_min(1e-4))
    net.joint_mean.copy_(torch.from_numpy(Q.mean(0)))
    net.joint_std.copy_(torch.from_numpy(Q.std(0)).clamp_min(1e-3))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    warm = max(0.05, 2.0 / steps)  # OneCycleLR needs >= 1 warm-up step
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=warm)
    pick = (lambda x, i: None) if extra is None else (lambda x, i: x[i])

    def validate() -> dict:
        net.eval()
        with torch.no_grad():
            est = torch.cat([net(torch.from_numpy(val_f[i : i + 512]).float(),
                                 None if val_extra is None else val_extra[i : i + 512])
                             for i in range(0, len(val_f), 512)])  # fmt: skip
            err = hand_error(space, est, torch.from_numpy(val_q))
        net.train()
        return {"median_m": float(err.median()), "under_3cm": float((err < 0.03).float().mean()),
                "under_15cm": float((err < 0.15).float().mean())}  # fmt: skip

    history, best = [], (float("inf"), None, None)
    for step in tqdm(range(steps), desc=desc, disable=not progress):
        i = rng.integers(0, len(F), batch_size)
        f, q = torch.from_numpy(F[i]).float(), torch.from_numpy(Q[i])
        est = net(f, pick(extra, i))
        kp_err = (space.keypoints(space.clip(est)) - space.keypoints(q)).norm(dim=-1).mean()
        loss = kp_err + joint_weight * ((est - q) / net.joint_std).square().mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{desc}: loss {loss.item()} at step {step}")
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
    return best[1], best[2], history


def _pose_cache(rig, space, encoder, spec, out, poses, seed, zoom, zoom_noise, progress):
    """Features of `poses` static pose frames (and of their zoom crops around the true hand,
    jittered by `zoom_noise` pixels, when zoom > 0), rendered and encoded once and cached at
    `<out>.poses.npz` -> dict feats, joints (+ zoom_feats, zoom_centres)."""
    from dexwm.io import atomic_write_bytes

    cache = Path(f"{out}.poses.npz")
    key = {"seed": seed, "encoder": str(spec), "zoom": f"{zoom}/{zoom_noise}"}
    if cache.is_file():
        z = np.load(cache)
        same = len(z["joints"]) == poses and all(
            str(z[k]) == str(key[k]) for k in ("seed", "encoder") if k in z.files
        )
        if same and (not zoom or ("zoom" in z.files and str(z["zoom"]) == key["zoom"])):
            return {k: z[k] for k in z.files if k not in key}
    side = rig.size
    rng = np.random.default_rng([seed, 77])
    parts: dict[str, list] = {"feats": [], "joints": [], "zoom_feats": [], "zoom_centres": []}
    for c in range(0, poses, 2000):  # render and encode in chunks: bounded memory
        images, q = pose_frames(rig, min(2000, poses - c), 10_000 + seed, c, progress)
        parts["feats"].append(_encode(encoder, images))
        parts["joints"].append(q)
        if zoom:
            centre = hand_centre(space, torch.from_numpy(q), side).numpy()
            centre += rng.normal(0.0, zoom_noise, centre.shape)
            crops, cc = zoom_crops(images, centre, zoom)
            parts["zoom_feats"].append(_encode(encoder, crops))
            parts["zoom_centres"].append(cc)
    have = {k: np.concatenate(v) for k, v in parts.items() if v}
    buf = io.BytesIO()
    np.savez(buf, **have, **{k: str(v) for k, v in key.items()})
    atomic_write_bytes(cache, buf.getvalue())
    return have


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
    zoom: int = 56,
    zoom_noise: float = 3.0,
    goal_tasks: list[str] = ("reach",),  # noqa: B006 (read-only)
    progress: bool = True,
) -> dict:
    """Train the goal-pose head on exploration shards with cached features (and `poses` static
    pose frames, rendered and encoded with the shards' encoder, cached beside `out` as
    `<out>.poses.npz`), then its zoom stage on `zoom`-pixel crops of the pose frames (0: none;
    needs pose frames); saves {state_dict, config, encoder, history, val, zoom, goal_error} of
    the steps with the lowest validation error to `out`. Validation: the last `val_fraction` of
    the pose frames (largest wrist/fingertip distance, median and share under 3 cm / 15 cm; the
    zoom stage's cropped around the true hand like its training frames). Reported, not used:
    the error on the goal images of the evaluation tasks `goal_tasks`."""
    from dexwm.data.feature_cache import load_feature_episodes
    from dexwm.io import atomic_write_bytes
    from dexwm.models.encoders import FrozenEncoder
    from dexwm.sim import Rig

    if steps < 10:
        raise ValueError(f"steps must be >= 10, got {steps}")
    if zoom and poses <= 0:
        raise ValueError("the zoom stage trains on pose frames: set poses > 0 or zoom 0")
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
    val_f = val_q = have = None
    if poses > 0:
        have = _pose_cache(rig, space, encoder, spec, out, poses, seed, zoom, zoom_noise, progress)
        n_val = max(1, int(round(val_fraction * poses)))
        val_f, val_q = have["feats"][-n_val:], have["joints"][-n_val:]
        F = np.concatenate([F, have["feats"][:-n_val]])
        Q = np.concatenate([Q, have["joints"][:-n_val]])
    if val_f is None:  # no pose frames: hold out exploration frames
        n_val = max(1, int(round(val_fraction * len(F))))
        F, Q, val_f, val_q = F[:-n_val], Q[:-n_val], F[-n_val:], Q[-n_val:]
    N, D = F.shape[1:]
    cfg = GoalPoseConfig(N, D, Q.shape[1])
    fit = dict(space=space, steps=steps, batch_size=batch_size, lr=lr, joint_weight=joint_weight,
               seed=seed, progress=progress)  # fmt: skip
    net = GoalPoseNet(cfg)
    state, val, history = _fit(net, F, Q, val_f, val_q, desc="goal-pose head", **fit)
    zoom_ck, zoom_stage = None, None
    if zoom:
        zf, zq, side = have["zoom_feats"], have["joints"], rig.size
        extra = _zoom_extra(have["zoom_centres"], side)
        zcfg = GoalPoseConfig(N, D, Q.shape[1], extra=2)
        znet = GoalPoseNet(zcfg)
        zstate, zval, zhist = _fit(znet, zf[:-n_val], zq[:-n_val], zf[-n_val:], zq[-n_val:],
                                   desc="goal-pose zoom", extra=extra[:-n_val],
                                   val_extra=extra[-n_val:], **fit)  # fmt: skip
        zoom_ck = {"state_dict": zstate, "config": asdict(zcfg), "crop": zoom, "side": side,
                   "noise": zoom_noise, "val": zval, "history": zhist}  # fmt: skip
        zoom_stage = {"net": znet, "crop": zoom, "side": side}
    encoder = encoder or FrozenEncoder(spec)
    goal_error = {t: goal_image_error(rig, space, net, encoder, t, zoom_stage) for t in goal_tasks}
    buf = io.BytesIO()
    torch.save({"state_dict": state, "config": asdict(cfg), "encoder": spec, "history": history,
                "val": val, "zoom": zoom_ck, "goal_error": goal_error}, buf)  # fmt: skip
    atomic_write_bytes(out, buf.getvalue())
    return {"frames": len(F), "val": val, "zoom_val": zoom_ck and zoom_ck["val"],
            "goal_error": goal_error, "history": history}  # fmt: skip


@torch.no_grad()
def goal_image_error(rig, space, net: GoalPoseNet, encoder, task: str, zoom=None) -> dict:
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
    est = estimate(net, encoder, np.stack(images), space, zoom)
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
        self.net = _load_net(ck)
        self.encoder = FrozenEncoder(ck["encoder"])
        self.val = ck.get("val")
        z = ck.get("zoom")
        self.zoom = None if not z else {"net": _load_net(z), "crop": z["crop"], "side": z["side"]}
        self._space = None

    @torch.no_grad()
    def __call__(self, image: np.ndarray, space=None) -> torch.Tensor:
        """Goal image -> joints (J,); `space` (a `JointSpace` of the Allegro rig: FK and camera)
        places the zoom stage's crop, the rig's own when not given."""
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3:
            raise ValueError("the goal image must be a uint8 (H, W, 3) array")
        if image.shape[0] != image.shape[1] and self.zoom is not None:
            raise ValueError(f"the zoom stage needs a square goal image, got {image.shape[:2]}")
        if self.zoom is not None and space is None:
            if self._space is None:
                from dexwm.sim import Rig

                self._space = _fk(Rig("allegro", size=self.zoom["side"]))
            space = self._space
        return estimate(self.net, self.encoder, image[None], space, self.zoom)[0]


def _load_net(ck: dict) -> GoalPoseNet:
    net = GoalPoseNet(GoalPoseConfig(**ck["config"]))
    net.load_state_dict(ck["state_dict"])
    return net.eval().requires_grad_(False)
