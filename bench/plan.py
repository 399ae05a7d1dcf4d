"""Planning latency per control step (encode + every planner iteration) at DexWM's settings and at
the default settings, for the tiny and small presets; its fraction of the FLOP-bound time (rollout
FLOPs / measured fp32 matmul peak); and the speed-up of the batched, shared-context rollout over
a naive loop that rolls out one candidate at a time.

Usage:
  python bench/plan.py [--presets '[tiny, small]'] [--threads 2] [--reps 2] [--out bench/results/plan.json]

Predictor weights are random (timing does not depend on them). Where a full control step would
take minutes (small preset at DexWM's 10 x 512), one iteration is timed and the step is
extrapolated (`extrapolated: true`). The thread count and the machine's load average are stored:
other jobs on a 2-core machine inflate every number.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import yaml  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def build_model(preset: str):
    from dexwm.models.world_model import WorldModel

    cfg = yaml.safe_load((ROOT / f"configs/model/{preset}.yaml").read_text())["model"]
    torch.manual_seed(0)
    wm = WorldModel(**{k: cfg[k] for k in ("encoder", "predictor", "hand_head", "feature_norm")})
    for p in wm.predictor.parameters():
        torch.nn.init.normal_(p, std=0.02)
    return wm.eval().requires_grad_(False)


def matmul_peak(threads: int, n: int = 1536, reps: int = 5) -> float:
    """Best fp32 GFLOP/s of an n x n x n matmul."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def default_policy_args() -> dict:
    """The first MPC policy of configs/plan/default.yaml (inside a `Staged` wrapper or not)."""
    cfg = yaml.safe_load((ROOT / "configs/plan/default.yaml").read_text())
    specs = [p["init_args"]["policy"] if p["class_path"].endswith("Staged") else p
             for p in cfg["policies"]]  # fmt: skip
    return next(p for p in specs if p["class_path"].endswith("MPCPolicy"))


def make_policy(spec: dict, chunk: int = 0):
    from jsonargparse import ArgumentParser

    from dexwm.control import Policy

    p = ArgumentParser()
    p.add_argument("--policy", type=Policy)
    policy = p.instantiate(p.parse_object({"policy": spec})).policy
    if chunk and hasattr(policy.planner, "chunk"):
        policy.planner.chunk = chunk
    return policy


DEXWM = {
    "class_path": "dexwm.planning.MPCPolicy",
    "init_args": {"name": "dexwm", "planner": {"class_path": "dexwm.planning.CEM",
                  "init_args": {"samples": 512, "elites": 10, "iterations": 10}}},
}  # fmt: skip


def time_control_steps(policy, rig, obs, reps: int, max_iterations: int | None) -> dict:
    """Seconds per policy.act (one control step), iterations capped for extrapolation."""
    planner = policy.planner
    full = planner.iterations
    if max_iterations and full > max_iterations:
        planner.iterations = max_iterations
    times = []
    for _ in range(reps + 1):  # first call warms up
        t = time.perf_counter()
        policy.act(obs)
        times.append(time.perf_counter() - t)
    measured = min(times[1:])
    out = {"iterations": full, "samples": planner.samples, "measured_s": measured,
           "measured_iterations": planner.iterations, "extrapolated": planner.iterations != full}  # fmt: skip
    if out["extrapolated"]:  # encode + FK are negligible next to the rollouts (see per_iteration)
        out["control_step_s"] = measured * full / planner.iterations
    else:
        out["control_step_s"] = measured
    planner.iterations = full
    return out


def bench_preset(preset: str, rig, threads: int, reps: int, peak: float) -> dict:
    from dexwm.control import ModelRollout

    wm = build_model(preset)
    big = preset != "tiny"
    res = {"preset": preset, "predictor": vars(wm.pred_cfg), "tokens": wm.shape["num_tokens"],
           "feat_dim": wm.shape["dim"]}  # fmt: skip
    obs = rig.reset("grasp", 0)
    goal = rig.goal_image("grasp", 0)
    for label, spec in (("dexwm", DEXWM), ("default", default_policy_args())):
        policy = make_policy(spec, chunk=128 if big else 0).use_model(wm)
        policy.reset(rig, goal, obs)
        res[label] = time_control_steps(
            policy, rig, obs, reps, 1 if big and label == "dexwm" else None
        )
        res[label]["settings"] = spec["init_args"]
    # one CEM iteration's rollout (512 candidates x horizon 3): FLOPs, time, naive loop
    policy = make_policy(DEXWM).use_model(wm)
    policy.reset(rig, goal, obs)
    feats = wm.encode(torch.from_numpy(obs["image"])[None])
    q0 = torch.as_tensor(obs["commanded"], dtype=torch.float32)
    roll = ModelRollout(wm, policy.space, feats, q0[None])
    B, H = 512, 3
    plans = q0 + 0.1 * torch.randn(B, H, 23, generator=torch.Generator().manual_seed(0))
    cost = policy.objective
    with torch.no_grad():
        with FlopCounterMode(display=False) as fc:
            cost(roll(plans[:64]))
        flops = fc.get_total_flops() * B / 64
        chunk = 128 if big else B
        t = time.perf_counter()
        for c in plans.split(chunk):
            cost(roll(c))
        batched = time.perf_counter() - t
        k = 8 if big else 32
        cost(roll(plans[:1]))
        t = time.perf_counter()
        for i in range(k):
            cost(roll(plans[i : i + 1]))
        naive = (time.perf_counter() - t) / k * B
    res["iteration"] = {
        "candidates": B, "horizon": H, "gflop": flops / 1e9, "batched_s": batched,
        "naive_loop_s": naive, "naive_extrapolated_from": k, "speedup_vs_naive": naive / batched,
        "flop_bound_s": flops / 1e9 / peak, "fraction_of_flop_bound": flops / 1e9 / peak / batched,
    }  # fmt: skip
    return res


def main(
    presets: list[str] = ("tiny", "small"),  # noqa: B006
    threads: int = 2,
    reps: int = 2,
    out: str = "bench/results/plan.json",
) -> dict:
    from dexwm.sim import Rig

    torch.set_num_threads(threads)
    load0 = os.getloadavg()
    rig = Rig("allegro", size=128)
    peak = matmul_peak(threads)
    results = {
        "threads": threads, "load_avg_start": load0, "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__, "matmul_peak_gflops": peak, "presets": {},
    }  # fmt: skip
    for preset in presets:
        results["presets"][preset] = r = bench_preset(preset, rig, threads, reps, peak)
        print(
            f"{preset}: DexWM 512x10 {r['dexwm']['control_step_s']:.2f} s/step"
            f"{' (extrapolated)' if r['dexwm']['extrapolated'] else ''}, default "
            f"{r['default']['control_step_s']:.3f} s/step; one 512 x H3 iteration "
            f"{r['iteration']['batched_s']:.2f} s = {r['iteration']['fraction_of_flop_bound']:.0%}"
            f" of FLOP-bound ({r['iteration']['gflop']:.0f} GFLOP at {peak:.0f} GFLOP/s), "
            f"{r['iteration']['speedup_vs_naive']:.1f}x faster than one candidate at a time"
        )
    results["load_avg_end"] = os.getloadavg()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(results, indent=1, default=str))
    print(
        f"written {out} (threads {threads}, load {load0[0]:.1f} -> {results['load_avg_end'][0]:.1f})"
    )
    return results


if __name__ == "__main__":
    from jsonargparse import CLI

    CLI(main, as_positional=False)
