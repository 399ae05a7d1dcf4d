"""The DexWM predictor: next-frame feature prediction conditioned on hand-keypoint actions.

Frames f_0..f_T of N tokens each. Query stream: frame i (i = 0..T-1) holds proj(f_i) + pos_i and,
conditioned on the action a_i (i -> i+1) and its time gap dt_i, predicts f_{i+1}. Each block does
  1. self-attention within the query frame,
  2. cross-attention from query frame i to the CLEAN context frames 0..i (block-causal); the clean
     stream is the input embedding proj(f_j) + pos_j, modulated by the action that led into frame j,
     and is not updated through depth (as in DexWM / CDiT),
  3. an MLP,
each modulated by AdaLN-Zero (shift, scale, gate) from the conditioning vector. All frames are
predicted in one pass with teacher forcing; `rollout` predicts autoregressively with the clean
context's keys/values computed once per block and shared by every sample of a batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (B, T, N, D); shift, scale (B, T, D) per frame."""
    return x * (1 + scale.unsqueeze(2)) + shift.unsqueeze(2)


class TimeGapEmbedding(nn.Module):
    """Sinusoidal features of the gap between two frames, in seconds (periods 0.05 s to 20 s)."""

    def __init__(self, num_freqs: int = 8) -> None:
        super().__init__()
        periods = torch.logspace(math.log10(0.05), math.log10(20.0), num_freqs)
        self.register_buffer("omega", 2 * math.pi / periods, persistent=False)
        self.dim = 2 * num_freqs + 1

    def forward(self, dt: torch.Tensor) -> torch.Tensor:
        arg = dt.unsqueeze(-1) * self.omega  # (..., F)
        return torch.cat([dt.unsqueeze(-1), arg.sin(), arg.cos()], dim=-1)  # (..., 2F + 1)


class ConditionEmbedding(nn.Module):
    """(normalised action, time gap) -> conditioning vector c for AdaLN."""

    def __init__(self, action_dim: int, dim: int, time_gap: bool = True) -> None:
        super().__init__()
        self.time = TimeGapEmbedding() if time_gap else None
        in_dim = action_dim + (self.time.dim if self.time else 0)
        self.mlp = nn.Sequential(nn.Linear(in_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, action: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        x = action if self.time is None else torch.cat([action, self.time(dt)], dim=-1)
        return self.mlp(x)  # (..., dim)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, cond_dim: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.norm_ctx = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.cross_q = nn.Linear(dim, dim)
        self.cross_kv = nn.Linear(dim, 2 * dim)
        self.cross_proj = nn.Linear(dim, dim)
        self.norm3 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim)
        )
        # AdaLN-Zero: 9 modulations for the query stream, 2 for the clean context stream.
        self.ada_query = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 9 * dim))
        self.ada_ctx = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 2 * dim))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(-3, -2)  # (B, L, D) -> (B, h, L, d)

    def context_kv(
        self, clean: torch.Tensor, c_in: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys/values of clean frames. clean (B, T, N, D), c_in (B, T, D) -> 2 x (B, h, T*N, d)."""
        shift, scale = self.ada_ctx(c_in).chunk(2, dim=-1)
        x = modulate(self.norm_ctx(clean), shift, scale).flatten(1, 2)  # (B, T*N, D)
        k, v = self.cross_kv(x).chunk(2, dim=-1)
        return self._heads(k), self._heads(v)

    def forward(
        self,
        x: torch.Tensor,
        c: torch.Tensor,
        kv: tuple[torch.Tensor, torch.Tensor],
        cross_mask: torch.Tensor | None,
        extra_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """x (B, T, N, D) query frames; c (B, T, D); kv: clean keys/values (Bc, h, L, d), Bc = B or 1;
        cross_mask (T*N, L) bool, True = attend; extra_kv: per-sample keys/values appended to kv."""
        B, T, N, D = x.shape
        (s1, sc1, g1, s2, sc2, g2, s3, sc3, g3) = self.ada_query(c).chunk(9, dim=-1)
        # 1. self-attention within each frame
        h = modulate(self.norm1(x), s1, sc1).flatten(0, 1)  # (B*T, N, D)
        q, k, v = (self._heads(t) for t in self.qkv(h).chunk(3, dim=-1))  # (B*T, h, N, d)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)  # (B*T, N, D)
        x = x + g1.unsqueeze(2) * self.proj(a).view(B, T, N, D)
        # 2. block-causal cross-attention to the clean context frames
        q = self._heads(
            self.cross_q(modulate(self.norm2(x), s2, sc2).flatten(1, 2))
        )  # (B, h, T*N, d)
        if extra_kv is None:
            k, v = kv
            if k.shape[0] != B:
                k, v = k.expand(B, -1, -1, -1), v.expand(B, -1, -1, -1)
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=cross_mask)
        else:  # shared context (broadcast, never copied) + per-sample frames
            scale = q.shape[-1] ** -0.5
            s_ctx = torch.matmul(q, kv[0].transpose(-1, -2)) * scale  # (B, h, T*N, Lc)
            s_ext = torch.matmul(q, extra_kv[0].transpose(-1, -2)) * scale  # (B, h, T*N, Le)
            p = torch.cat([s_ctx, s_ext], dim=-1).softmax(dim=-1)
            Lc = s_ctx.shape[-1]
            a = torch.matmul(p[..., :Lc], kv[1]) + torch.matmul(p[..., Lc:], extra_kv[1])
        a = a.transpose(1, 2).flatten(2).view(B, T, N, D)
        x = x + g2.unsqueeze(2) * self.cross_proj(a)
        # 3. MLP
        return x + g3.unsqueeze(2) * self.mlp(modulate(self.norm3(x), s3, sc3))


@dataclass
class PredictorConfig:
    """Predictor size and options. Presets (tiny / small / paper) live in configs/model/."""

    dim: int = 192
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 2.0
    max_frames: int = (
        3  # frames the model sees at once (= clip frames - 1: training clips add a target)
    )
    cond_dim: int = 128  # width of the action (+ time gap) embedding that feeds AdaLN (DexWM: 132)
    time_gap: bool = True  # explicit time-gap embedding (improvement over DexWM)
    residual: bool = True  # predict f_{i+1} - f_i (False: predict f_{i+1} directly, as DexWM)
    grad_checkpointing: bool = False


class Predictor(nn.Module):
    """Features (B, T, N, Df) + actions (B, T-1, A) + gaps (B, T-1) -> next-frame features."""

    def __init__(
        self, feat_dim: int, num_tokens: int, action_dim: int, cfg: PredictorConfig
    ) -> None:
        super().__init__()
        self.cfg, D = cfg, cfg.dim
        self.feat_dim, self.num_tokens, self.action_dim = feat_dim, num_tokens, action_dim
        self.proj_in = nn.Linear(feat_dim, D)
        self.pos = nn.Parameter(torch.randn(cfg.max_frames, num_tokens, D) * 0.02)  # learned
        self.cond = ConditionEmbedding(action_dim, cfg.cond_dim, cfg.time_gap)
        self.blocks = nn.ModuleList(
            Block(D, cfg.heads, cfg.mlp_ratio, cfg.cond_dim) for _ in range(cfg.depth)
        )
        self.final_norm = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(cfg.cond_dim, 2 * D))
        self.final = nn.Linear(D, feat_dim)
        # frame i's queries see clean frames 0..i: built once, sliced per call
        frame = torch.arange(cfg.max_frames).repeat_interleave(num_tokens)
        self.register_buffer("causal", frame[:, None] >= frame[None, :], persistent=False)
        self._zero_init()

    def _zero_init(self) -> None:
        for blk in self.blocks:
            for ada in (blk.ada_query, blk.ada_ctx):
                nn.init.zeros_(ada[-1].weight)
                nn.init.zeros_(ada[-1].bias)
        for lin in (self.final_ada[-1], self.final):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def _embed(self, feats: torch.Tensor, first: int = 0) -> torch.Tensor:
        """(B, T, N, Df) -> (B, T, N, D) with positions first..first+T-1."""
        return self.proj_in(feats) + self.pos[first : first + feats.shape[1]]

    def _in_cond(self, c: torch.Tensor) -> torch.Tensor:
        """Conditioning of clean frames = that of the action leading INTO each frame; zero for frame 0.
        c (B, T-1, D) per transition -> (B, T, D) per frame."""
        return torch.cat([torch.zeros_like(c[:, :1]), c], dim=1)

    def _head(self, x: torch.Tensor, c: torch.Tensor, feats_in: torch.Tensor) -> torch.Tensor:
        shift, scale = self.final_ada(c).chunk(2, dim=-1)
        out = self.final(modulate(self.final_norm(x), shift, scale))  # (B, T, N, Df)
        return feats_in + out if self.cfg.residual else out

    def forward(self, feats: torch.Tensor, actions: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        """Teacher-forced one-step prediction. feats (B, T+1, N, Df) or (B, T, N, Df); actions (B, T, A)
        normalised; dt (B, T) seconds. Returns (B, T, N, Df): out[:, i] predicts feats[:, i+1]."""
        T = actions.shape[1]
        if T > self.cfg.max_frames:
            raise ValueError(f"{T} query frames exceed max_frames={self.cfg.max_frames}")
        inp = feats[:, :T]  # (B, T, N, Df)
        x = self._embed(inp)  # (B, T, N, D) query stream, also the clean stream
        c = self.cond(actions, dt)  # (B, T, D)
        mask = self.causal[: T * self.num_tokens, : T * self.num_tokens]
        c_in = self._in_cond(c[:, :-1])  # (B, T, D)
        clean = x
        for blk in self.blocks:
            if self.cfg.grad_checkpointing and self.training:
                x = checkpoint(self._block_fwd, blk, x, c, clean, c_in, mask, use_reentrant=False)
            else:
                x = self._block_fwd(blk, x, c, clean, c_in, mask)
        return self._head(x, c, inp)

    @staticmethod
    def _block_fwd(blk, x, c, clean, c_in, mask):
        return blk(x, c, blk.context_kv(clean, c_in), mask)

    def rollout(
        self,
        context: torch.Tensor,
        context_actions: torch.Tensor,
        context_dt: torch.Tensor,
        actions: torch.Tensor,
        dt: torch.Tensor,
    ) -> torch.Tensor:
        """context (Bc, C, N, Df) observed features, Bc = 1 (shared by all samples) or B;
        context_actions (Bc, C-1, A) / context_dt (Bc, C-1): transitions inside the context;
        actions (B, H, A) normalised, dt (B, H): the future. Returns (B, H, N, Df) predictions.

        While C + H - 1 <= max_frames (the window never holds more than max_frames) the clean keys/values of the context are computed once and each
        step adds one frame per sample; beyond that the window slides (oldest frames dropped,
        positions re-indexed) and the window's keys/values are recomputed each step.
        """
        Bc, C = context.shape[:2]
        B, H = actions.shape[:2]
        W = self.cfg.max_frames
        if C > W:
            context, context_actions, context_dt = (
                context[:, -W:],
                context_actions[:, -(W - 1) :],
                context_dt[:, -(W - 1) :],
            )
            C = W
        c_ctx = (
            self.cond(context_actions, context_dt)
            if C > 1
            else context.new_zeros(Bc, 0, self.cfg.cond_dim)
        )
        c_fut = self.cond(actions, dt)  # (B, H, D)
        frames = [context[:, j] for j in range(C)]  # clean frames, (Bc or B, N, Df) each
        conds_in = [torch.zeros_like(c_fut[:, 0])[:1].expand(Bc, -1)] + [
            c_ctx[:, j] for j in range(C - 1)
        ]
        shared_kv = None
        if C + H - 1 <= W:  # no sliding: context keys/values once per block, shared by all samples
            clean = self._embed(context)  # (Bc, C, N, D)
            cin = torch.stack(conds_in, dim=1)  # (Bc, C, D)
            shared_kv = [blk.context_kv(clean, cin) for blk in self.blocks]
            ext: list[list[torch.Tensor]] = [[] for _ in self.blocks]  # per-sample keys
            ext_v: list[list[torch.Tensor]] = [[] for _ in self.blocks]
        preds = []
        for s in range(H):
            n = len(frames)
            start = max(0, n - W)
            pos = n - 1 - start  # position of the query (newest) frame
            last = frames[-1].expand(B, -1, -1)  # (B, N, Df)
            x = self._embed(last[:, None], first=pos)  # (B, 1, N, D)
            c = c_fut[:, s : s + 1]  # (B, 1, D)
            if shared_kv is None:  # sliding window: re-embed the window at positions 0..W'-1
                win = torch.stack(
                    [f.expand(B, -1, -1) for f in frames[start:]], 1
                )  # (B, W', N, Df)
                # as in training, the window's first frame has no incoming action
                cin = torch.stack(
                    [ci.expand(B, -1) for ci in conds_in[:1] + conds_in[start + 1 :]], 1
                )
                clean = self._embed(win)  # (B, W', N, D)
            for bi, blk in enumerate(self.blocks):
                if shared_kv is None:
                    x = blk(x, c, blk.context_kv(clean, cin), None)
                elif ext[bi]:
                    extra = (torch.cat(ext[bi], 2), torch.cat(ext_v[bi], 2))  # (B, h, s*N, d)
                    x = blk(x, c, shared_kv[bi], None, extra_kv=extra)
                else:
                    x = blk(x, c, shared_kv[bi], None)
            pred = self._head(x, c, last[:, None])[:, 0]  # (B, N, Df)
            preds.append(pred)
            frames.append(pred)
            conds_in.append(c_fut[:, s])
            if shared_kv is not None and s + 1 < H:
                clean = self._embed(pred[:, None], first=len(frames) - 1)  # (B, 1, N, D)
                for bi, blk in enumerate(self.blocks):
                    k, v = blk.context_kv(clean, c_fut[:, s : s + 1])
                    ext[bi].append(k)
                    ext_v[bi].append(v)
        return torch.stack(preds, dim=1)
