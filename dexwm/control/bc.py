"""Goal-conditioned behaviour cloning (`GoalBC`), the learned baseline and the planners' prior.

GoalBC is trained on the same robot data as the world model (exploration shards with cached
features) with hindsight goals: for a frame t, a later frame t + k (k <= max_goal_steps) of the
same episode is the goal and the commanded joints of the next `chunk` steps are the target (as
relative changes, action chunking as in ACT / Diffusion Policy). Network: each frame's tokens are
compressed per token, current + goal tokens and the current joints go through an MLP.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dexwm.control.policy import Policy, check_goal_image
from dexwm.data.feature_cache import load_feature_episodes


@dataclass
class GoalBCConfig:
    num_tokens: int
    feat_dim: int
    n_joints: int = 23
    chunk: int = 3  # future steps predicted per call
    token_dim: int = 16  # per-token compression of the features
    hidden: int = 512
    dropout: float = 0.2
    max_goal_steps: int = 20  # hindsight goals up to this many steps ahead


class GoalBC(nn.Module):
    """(current feats (B, N, D), goal feats (B, N, D), joints (B, J)) -> joint changes of the next
    `chunk` steps (B, chunk, J), all normalised with the statistics stored as buffers."""

    def __init__(self, cfg: GoalBCConfig) -> None:
        super().__init__()
        self.cfg = cfg
        N, D, J = cfg.num_tokens, cfg.feat_dim, cfg.n_joints
        self.reduce = nn.Linear(D, cfg.token_dim)
        self.mlp = nn.Sequential(
            nn.Dropout(cfg.dropout), nn.Linear(2 * N * cfg.token_dim + J, cfg.hidden), nn.GELU(),
            nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, cfg.hidden), nn.GELU(),
            nn.Linear(cfg.hidden, cfg.chunk * J),
        )  # fmt: skip
        for name, dim in (("feat", D), ("joint", J), ("delta", cfg.chunk * J)):
            self.register_buffer(f"{name}_mean", torch.zeros(dim))
            self.register_buffer(f"{name}_std", torch.ones(dim))

    def forward(self, feats: torch.Tensor, goal: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        f = (torch.stack([feats, goal], 1) - self.feat_mean) / self.feat_std  # (B, 2, N, D)
        x = self.reduce(f).flatten(1)  # (B, 2 * N * token_dim)
        x = torch.cat([x, (q - self.joint_mean) / self.joint_std], dim=1)
        return self.mlp(x).unflatten(1, (self.cfg.chunk, self.cfg.n_joints))  # (B, chunk, J)

    def predict(self, feats: torch.Tensor, goal: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Absolute joint targets of the next `chunk` steps (B, chunk, J)."""
        d = self(feats, goal, q).flatten(1) * self.delta_std + self.delta_mean
        return q[:, None] + d.unflatten(1, (self.cfg.chunk, self.cfg.n_joints))


def _batch(eps, rng, size, cfg: GoalBCConfig):
    """Hindsight-relabelled examples: (feats_t, feats_{t+k}, q_t) -> q_{t+1..t+chunk} - q_t."""
    F, G, Q, Y = [], [], [], []
    for e in rng.choice(len(eps), size):
        f, q = eps[e]["feats"], eps[e]["joints"]
        T = len(q)
        t = rng.integers(0, T - 1)
        g = min(T - 1, t + rng.integers(1, cfg.max_goal_steps + 1))
        idx = np.minimum(t + 1 + np.arange(cfg.chunk), g)  # hold at the goal frame
        F.append(f[t])
        G.append(f[g])
        Q.append(q[t])
        Y.append((q[idx] - q[t]).reshape(-1))
    to = lambda a: torch.from_numpy(np.stack(a).astype(np.float32))  # noqa: E731
    return to(F), to(G), to(Q), to(Y)


def train_goal_bc(
    shards: list[str] | str,
    out: str,
    steps: int = 3000,
    batch_size: int = 256,
    lr: float = 1e-3,
    chunk: int = 3,
    max_goal_steps: int = 20,
    hidden: int = 512,
    token_dim: int = 16,
    dropout: float = 0.2,
    val_episodes: int = 20,
    seed: int = 0,
) -> dict:
    """Train GoalBC on shards with cached features; saves {state_dict, config, encoder} of the
    step with the lowest validation loss (checked 20 times) to `out` (torch.load(...,
    weights_only=True) reads it). Returns train / val losses."""
    from dexwm.io import atomic_write_bytes

    eps = load_feature_episodes(shards)
    if len(eps) <= val_episodes:
        raise ValueError(f"{len(eps)} episodes: need more than val_episodes={val_episodes}")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    val, train = eps[:val_episodes], eps[val_episodes:]
    N, D = train[0]["feats"].shape[1:]
    cfg = GoalBCConfig(N, D, train[0]["joints"].shape[1], chunk, token_dim, hidden, dropout,
                       max_goal_steps)  # fmt: skip
    net = GoalBC(cfg)
    feats = np.concatenate([e["feats"][::5] for e in train]).astype(np.float32)  # (M, N, D)
    joints = np.concatenate([e["joints"] for e in train])
    stats = _batch(train, rng, 4096, cfg)
    for name, x in (("feat", feats.reshape(-1, D)), ("joint", joints), ("delta", stats[3].numpy())):
        getattr(net, f"{name}_mean").copy_(torch.from_numpy(x.mean(0)))
        getattr(net, f"{name}_std").copy_(torch.from_numpy(x.std(0)).clamp_min(1e-4))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.05)
    vb = _batch(val, np.random.default_rng(seed + 1), 2048, cfg)

    def loss_of(b):
        f, g, q, y = b
        return (net(f, g, q).flatten(1) - (y - net.delta_mean) / net.delta_std).square().mean()

    history, best = [], (float("inf"), None)
    for step in range(steps):
        net.train()
        loss = loss_of(_batch(train, rng, batch_size, cfg))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % max(1, steps // 20) == 0 or step + 1 == steps:
            net.eval()
            with torch.no_grad():
                v = float(loss_of(vb))
            history.append({"step": step + 1, "train": loss.item(), "val": v})
            if v < best[0]:
                best = (v, {k: t.clone() for k, t in net.state_dict().items()})
    import io

    buf = io.BytesIO()
    torch.save({"state_dict": best[1], "config": asdict(cfg), "encoder": eps[0]["encoder"],
                "history": history, "best_val": best[0]}, buf)  # fmt: skip
    atomic_write_bytes(out, buf.getvalue())
    return {"episodes": len(eps), "best_val": best[0], "history": history}


class BCPolicy(Policy):
    """A trained GoalBC on the rig: encode the frame, predict `chunk` targets, execute `execute`.
    Also serves as the planners' prior (`plan`)."""

    def __init__(self, checkpoint: str, execute: int = 1, name: str = "bc") -> None:
        if execute < 1:
            raise ValueError(f"execute must be >= 1, got {execute}")
        self.checkpoint, self.execute, self.name = checkpoint, execute, name
        self.net = None

    def check(self) -> None:
        if not Path(self.checkpoint).is_file():
            raise FileNotFoundError(
                f"{self.name}: no goal-conditioned BC checkpoint at {self.checkpoint}: train one "
                "with `python plan.py bc --shards FEATURES --out PATH` (the default planner uses it "
                "as its search prior) and give its path"
            )

    def setup(self, checkpoint: str | None = None) -> None:
        from dexwm.models.encoders import FrozenEncoder

        if self.net is not None:
            return
        self.check()
        ck = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
        self.net = GoalBC(GoalBCConfig(**ck["config"]))
        self.net.load_state_dict(ck["state_dict"])
        self.net.eval().requires_grad_(False)
        enc = ck["encoder"]
        keys = ("name", "weights", "input_size", "stage")
        self.encoder = FrozenEncoder({k: enc[k] for k in keys if k in enc})
        if self.execute > self.net.cfg.chunk:
            raise ValueError(f"execute={self.execute} > the policy's chunk {self.net.cfg.chunk}")

    def reset(self, rig, goal_image: np.ndarray, obs: dict) -> None:
        super().reset(rig, goal_image, obs)
        check_goal_image(goal_image, obs["image"])
        self.setup()
        self.retarget(goal_image, obs)
        self.limits = torch.as_tensor(rig.joint_limits, dtype=torch.float32)

    def retarget(self, goal_image: np.ndarray, obs: dict) -> None:
        check_goal_image(goal_image, obs["image"])
        with torch.no_grad():
            self.goal = self.encoder(torch.from_numpy(goal_image)[None]).float()  # (1, N, D)

    @torch.no_grad()
    def goal_distance(self, obs: dict) -> float:
        """Mean squared difference of the frame's features to the goal's (the BC encoder's,
        scaled by the network's feature statistics)."""
        feats = self.encoder(torch.from_numpy(obs["image"])[None]).float()
        return float(((feats - self.goal) / self.net.feat_std).square().mean())

    @torch.no_grad()
    def plan(self, obs: dict, horizon: int | None = None) -> np.ndarray:
        """Absolute joint targets (horizon, J) (default: the policy's chunk; padded by holding)."""
        feats = self.encoder(torch.from_numpy(obs["image"])[None]).float()
        q = torch.as_tensor(obs["commanded"], dtype=torch.float32)[None]
        out = self.net.predict(feats, self.goal, q)[0]  # (chunk, J)
        horizon = horizon or len(out)
        out = torch.cat([out, out[-1:].expand(max(0, horizon - len(out)), -1)])[:horizon]
        return torch.clamp(out, self.limits[:, 0], self.limits[:, 1]).numpy().astype(np.float64)

    def act(self, obs: dict) -> np.ndarray:
        self.stats["calls"] += 1
        return self.plan(obs)[: self.execute]
