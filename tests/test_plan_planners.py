"""Planners on toy problems with a known optimum, warm starts, bad settings, batching."""

import pytest
import torch

from dexwm.planning import CEM, MPPI, Chain, GradientPlanner, shift_plan
from dexwm.planning.mppi import smooth_noise

H, A = 3, 2


def toy_problem(seed=0):
    """Leaky integrator s_t = 0.5 s_{t-1} + x_t (a differentiable 'rollout') and cost
    sum_t w_t |s_t - g_t|^2 (w_t = 0.6^(H-1-t)); the unique optimum is x*_t = g_t - 0.5 g_{t-1}."""
    g = torch.Generator().manual_seed(seed)
    targets = 0.5 * torch.randn(H, A, generator=g)  # (H, A): optimum within ~1 std of 0
    optimum = targets - 0.5 * torch.cat([torch.zeros(1, A), targets[:-1]])
    calls = []

    def rollout(x):  # (B, H, A) -> states (B, H, A)
        calls.append(x.shape[0])
        s, out = torch.zeros_like(x[:, 0]), []
        for t in range(x.shape[1]):
            s = 0.5 * s + x[:, t]
            out.append(s)
        return torch.stack(out, dim=1)

    def cost(states, x):
        return ((states - targets) ** 2).sum(-1) @ torch.tensor([0.36, 0.6, 1.0])

    return rollout, cost, optimum, calls


def start():
    return torch.zeros(H, A), torch.ones(H, A)


@pytest.mark.parametrize(
    "planner, tol",
    [
        (CEM(samples=256, elites=16, iterations=20), 0.05),
        (MPPI(samples=256, elites=64, iterations=20, temperature=0.5), 0.05),
        (GradientPlanner(iterations=300, lr=0.05), 0.01),
    ],
    ids=["cem", "mppi", "gradient"],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planners_reach_known_optimum(planner, tol, seed):
    rollout, cost, optimum, calls = toy_problem(seed)
    mean, std = start()
    res = planner(rollout, cost, mean, std, generator=torch.Generator().manual_seed(1))
    assert (res.mean - optimum).abs().max() < tol
    assert res.best_cost <= float(cost(rollout(mean[None]), mean[None])) + 1e-9
    assert res.evaluations == sum(calls[:-1])  # the check above made the last call
    if not isinstance(planner, GradientPlanner):  # one batched rollout per iteration
        assert calls[:-1] == [planner.samples] * planner.iterations


def test_gradient_refines_cem_and_respects_bounds():
    rollout, cost, optimum, _ = toy_problem(seed=3)
    mean, std = start()
    chain = Chain(
        [CEM(samples=64, elites=8, iterations=3), GradientPlanner(iterations=300, lr=0.05)]
    )
    coarse = CEM(samples=64, elites=8, iterations=3)(
        rollout, cost, mean, std, generator=torch.Generator().manual_seed(0)
    )
    fine = chain(rollout, cost, mean, std, generator=torch.Generator().manual_seed(0))
    assert (fine.best - optimum).abs().max() < 0.02 < (coarse.mean - optimum).abs().max()
    assert fine.evaluations == 64 * 3 + 301


def test_bounds_clip_every_candidate():
    """Identity rollout, cost |x - target|^2 with the target partly outside a box: the constrained
    optimum is the clipped target, and no candidate ever leaves the box."""
    target = torch.tensor([[0.5, -0.1], [-0.7, 0.15], [0.05, 0.9]])
    lo, hi = -0.2 * torch.ones(A), 0.2 * torch.ones(A)
    seen = []

    def rollout(x):
        seen.append(x.detach().clone())
        return x

    def cost(pred, x):
        return ((pred - target) ** 2).sum(dim=(-1, -2))

    mean, std = start()
    for planner in (
        CEM(samples=128, elites=8, iterations=8),
        MPPI(samples=128, elites=16, iterations=8),
        GradientPlanner(iterations=100, lr=0.05),
    ):
        res = planner(rollout, cost, mean, std, lo, hi, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(res.best, target.clamp(-0.2, 0.2), atol=0.02, rtol=0)
    allx = torch.cat(seen)
    assert (allx >= lo).all() and (allx <= hi).all()


def test_zero_std_dimensions_stay_fixed_and_proposals_compete():
    rollout, cost, optimum, _ = toy_problem()
    mean, std = start()
    std[:, 0] = 0.0
    res = CEM(samples=128, elites=8, iterations=5)(rollout, cost, mean, std)
    assert (res.mean[:, 0] == 0).all()
    # the exact optimum as a proposal wins at once and is returned as best
    res = CEM(samples=32, elites=4, iterations=1)(
        rollout, cost, mean, start()[1], proposals=optimum[None]
    )
    torch.testing.assert_close(res.best, optimum)
    assert res.best_cost == pytest.approx(0.0, abs=1e-10)


def test_early_stop_when_elites_agree():
    rollout, cost, _, calls = toy_problem()
    mean, std = start()
    res = CEM(samples=128, elites=8, iterations=50, stop_std=0.2)(rollout, cost, mean, std)
    assert res.iterations < 50 and len(calls) == res.iterations
    assert (res.std < 0.2).all()


def test_warm_start_shifts_plan():
    plan = torch.arange(12.0).reshape(3, 4)  # rows: steps 0, 1, 2
    torch.testing.assert_close(shift_plan(plan, 1), torch.stack([plan[1], plan[2], plan[2]]))
    torch.testing.assert_close(shift_plan(plan, 2), torch.stack([plan[2]] * 3))
    fill = torch.full((4,), -1.0)
    torch.testing.assert_close(shift_plan(plan, 1, fill), torch.stack([plan[1], plan[2], fill]))
    torch.testing.assert_close(shift_plan(plan, 5), torch.stack([plan[2]] * 3))
    torch.testing.assert_close(shift_plan(plan, 0), plan)


def test_warm_start_helps_the_next_call():
    """Re-planning from the shifted previous solution starts where the last search ended."""
    rollout, cost, optimum, _ = toy_problem()
    mean, std = start()
    first = CEM(samples=256, elites=16, iterations=10)(rollout, cost, mean, std)
    again = CEM(samples=8, elites=2, iterations=1)(rollout, cost, first.mean, std)
    cold = CEM(samples=8, elites=2, iterations=1)(rollout, cost, mean, std)
    assert again.best_cost < cold.best_cost


def test_smooth_noise_has_unit_variance_and_correlation():
    eps = torch.randn(20000, 5, 2, generator=torch.Generator().manual_seed(0))
    n = smooth_noise(eps, 0.7)
    assert n.std(dim=0).sub(1).abs().max() < 0.05
    corr = (n[:, 1:] * n[:, :-1]).mean()
    assert corr > 0.5 and (eps[:, 1:] * eps[:, :-1]).mean().abs() < 0.05


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: CEM(samples=8, elites=10), "elites"),
        (lambda: CEM(iterations=0), "iterations"),
        (lambda: CEM(samples=0), "samples"),
        (lambda: MPPI(elites=600), "elites"),
        (lambda: MPPI(temperature=0), "temperature"),
        (lambda: MPPI(smoothing=1.0), "smoothing"),
        (lambda: GradientPlanner(optimizer="lbfgs"), "optimizer"),
        (lambda: GradientPlanner(lr=-1), "lr"),
        (lambda: Chain([]), "at least one"),
    ],
)
def test_nonsense_settings_fail_at_construction(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_plan_shapes_fail_before_rollout():
    rollout, cost, _, calls = toy_problem()
    with pytest.raises(ValueError, match="horizon"):
        CEM()(rollout, cost, torch.zeros(0, A), torch.ones(0, A))
    with pytest.raises(ValueError, match="std"):
        CEM()(rollout, cost, torch.zeros(H, A), torch.ones(H, A + 1))
    with pytest.raises(ValueError, match="exceed"):
        CEM(samples=4, elites=2)(
            rollout, cost, torch.zeros(H, A), torch.ones(H, A), proposals=torch.zeros(5, H, A)
        )
    assert calls == []
