"""Gradient-based planning: backpropagate the cost through the (differentiable) rollout into the
action sequence.

The sequence is optimised in coordinates scaled by the search spread, x = x0 + std * z, so one
learning rate fits arm and finger joints alike and dimensions with std 0 stay fixed. `restarts`
candidates are optimised together in one batched rollout per step: the start itself, any
proposals (e.g. CEM's elites or a policy's plan) and noisy copies of the start. Candidates are
clipped to [lower, upper] after every step. Chained after CEM (`Chain`), it refines CEM's plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from dexwm.planning.base import Planner, PlanResult, Problem, clamp, positive


@dataclass
class GradientPlanner(Planner):
    iterations: int = 20  # optimiser steps (each = one batched rollout + backward)
    lr: float = 0.1  # in units of the search std
    optimizer: str = "adam"  # or "sgd"
    restarts: int = 1  # candidates optimised in parallel
    init_noise: float = 1.0  # noise of the extra restarts, in units of std

    def check(self) -> None:
        positive("iterations", self.iterations)
        positive("lr", self.lr)
        positive("restarts", self.restarts)
        positive("init_noise", self.init_noise, allow_zero=True)
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")

    @property
    def budget(self) -> int:
        return (self.iterations + 1) * self.restarts

    def solve(self, p: Problem) -> PlanResult:
        mean, std, lower, upper = p.mean, p.std, p.lower, p.upper
        starts = [p.clamp(mean)[None]]
        if p.proposals is not None:
            starts.append(p.clamp(p.proposals.to(mean))[: self.restarts - 1])
        n = self.restarts - sum(len(s) for s in starts)
        if n > 0:
            eps = torch.randn((n, *mean.shape), generator=p.generator, dtype=mean.dtype)
            starts.append(p.clamp(mean + self.init_noise * std * eps.to(mean.device)))
        x0 = torch.cat(starts).detach()  # (R, H, A)
        scale = std.detach()  # (H, A)
        z = torch.zeros_like(x0, requires_grad=True)
        opt = (torch.optim.Adam if self.optimizer == "adam" else torch.optim.SGD)([z], lr=self.lr)
        best, best_cost, history = x0[0], float("inf"), []

        def track(x: torch.Tensor, c: torch.Tensor) -> None:
            nonlocal best, best_cost
            i = int(torch.argmin(c))
            if float(c[i]) < best_cost:
                best, best_cost = x[i].detach().clone(), float(c[i])

        with torch.enable_grad():
            for _ in range(self.iterations):
                x = clamp(x0 + scale * z, lower, upper)  # (R, H, A)
                c = p.cost(p.rollout(x), x).reshape(-1)  # (R,)
                track(x, c.detach())
                history.append(float(c.detach().min()))
                opt.zero_grad()
                c.sum().backward()  # candidates are independent: per-candidate gradients
                opt.step()
                with torch.no_grad():  # projection: keep z inside the box (clamp has no gradient)
                    inside = clamp(x0 + scale * z, lower, upper)
                    z.copy_(torch.where(scale > 0, (inside - x0) / scale.clamp_min(1e-12), z))
        with torch.no_grad():
            x = clamp(x0 + scale * z, lower, upper)
            track(x, p.cost(p.rollout(x), x).reshape(-1))
        evaluations = (self.iterations + 1) * len(x0)
        return PlanResult(
            best, torch.zeros_like(best), best, best_cost, history, self.iterations, evaluations
        )


@dataclass
class Chain(Planner):
    """Planners run one after another, each starting from the previous one's plan (e.g. CEM, then
    gradient refinement); the spread passed on is the previous result's std where positive, else
    the initial std."""

    planners: list[Planner] = field(default_factory=list)

    def check(self) -> None:
        if not self.planners:
            raise ValueError("Chain needs at least one planner")
        for q in self.planners:
            q.check()

    @property
    def budget(self) -> int:
        return sum(q.budget for q in self.planners)

    def solve(self, p: Problem) -> PlanResult:
        results, mean, std, proposals = [], p.mean, p.std, p.proposals
        for q in self.planners:
            out = q.solve(Problem(p.rollout, p.cost, mean, std, p.lower, p.upper, proposals,
                                  p.generator))  # fmt: skip
            results.append(out)
            # the next stage starts at this plan, with this result's best as an extra candidate
            mean, std, proposals = out.mean, torch.where(out.std > 0, out.std, std), out.best[None]
        final = min(results, key=lambda r: r.best_cost)
        return PlanResult(
            out.mean, out.std, final.best, final.best_cost,
            [c for r in results for c in r.costs], sum(r.iterations for r in results),
            sum(r.evaluations for r in results),
        )  # fmt: skip
