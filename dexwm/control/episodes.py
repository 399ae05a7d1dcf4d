"""The evaluation harness: policies (MPC planners and baselines) on the rig's seeded episodes.

    from dexwm.control import evaluate, load_policies, MPCPolicy
    from dexwm.planning import CEM
    res = evaluate([MPCPolicy(CEM(samples=64, iterations=3))], tasks=["reach"], episodes=5,
                   checkpoint="runs/x/checkpoints/last.ckpt", out="runs/plan/eval")
    res = evaluate(load_policies("configs/plan/default.yaml"), episodes=[0, 1], checkpoint=...)
    res["summary"]     # per policy and task: success under both threshold sets, distances, timing

Each episode: reset the rig to (task, index), render the goal image, then ask the policy for
joint targets and step the rig at 10 Hz until the task's step budget ends (or, with
`stop_on_success`, once both threshold sets have held for 10 steps: success is final then).
Success of an episode = the task's test held for 10 consecutive steps at some point (as
`dexwm.sim.oracle.run_oracle` counts it). Written to `out`: episodes.jsonl (one record per
episode), summary.json, summary.md and, with `video`, a GIF per episode (camera | goal).
Episodes run in `workers` processes (spawned; one torch thread each by default).
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dexwm.control.policy import Policy
from dexwm.io import exit_with_parent

TIMING_KEYS = ("plan_s_per_step", "plan_s_per_call")
ORDER = ("reach", "grasp", "place", "all", "pick_place")  # rows of the summaries


def run_episode(
    rig,
    policy: Policy,
    task: str,
    index: int,
    *,
    max_steps: int | None = None,
    stop_on_success: bool = True,
    video: bool = False,
    observations: list[dict] | None = None,
) -> tuple[dict, list[np.ndarray] | None]:
    """One episode of `policy` on `rig` -> (record, frames (camera | goal) or None); every
    observation is appended to `observations` when given (data collection)."""
    obs = rig.reset(task, index)
    keep = observations.append if observations is not None else (lambda o: None)
    keep(obs)
    goal = rig.goal_image(task, index)
    policy.reset(rig, goal, obs)
    budget = rig.episode.max_steps if max_steps is None else int(max_steps)
    frames = [np.concatenate([obs["image"], goal], axis=1)] if video else None
    first: dict[str, int | None] = {"dexwm": None, "strict": None}
    plan_time, calls, step = 0.0, 0, 0
    while step < budget:
        t0 = time.perf_counter()
        targets = np.atleast_2d(policy.act(obs))  # (k, J)
        plan_time += time.perf_counter() - t0
        calls += 1
        for q in targets[: budget - step]:
            obs = rig.step(q)
            keep(obs)
            step += 1
            if video:
                frames.append(np.concatenate([obs["image"], goal], axis=1))
            for name in first:
                if first[name] is None and rig.success(name):
                    first[name] = step
        if stop_on_success and all(v is not None for v in first.values()):
            break
    last = rig.history[-1] if rig.history else {}
    record = {
        "policy": policy.name,
        "task": task,
        "episode": int(index),
        "object": rig.episode.object,
        "success_dexwm": first["dexwm"] is not None,
        "success_strict": first["strict"] is not None,
        "step_dexwm": first["dexwm"],
        "step_strict": first["strict"],
        "steps": step,
        "final_distance": last.get("distance"),
        "final_lift": last.get("lift"),
        "final_contact": last.get("contact"),
        "plan_s_per_step": plan_time / max(step, 1),
        "plan_s_per_call": plan_time / max(calls, 1),
        **{k: v for k, v in getattr(policy, "stats", {}).items()},
    }
    return record, frames


def write_gif(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f) for f in frames]
    tmp = path.with_suffix(".tmp.gif")
    images[0].save(tmp, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    os.replace(tmp, path)


# ---- workers ---------------------------------------------------------------------------------

_WORKER: dict = {}


def _init_worker(policies, checkpoint, size, threads, options, worker: bool = True) -> None:
    if worker:  # not in-process: a run started with nohup must outlive its shell
        exit_with_parent()
    import timm  # noqa: F401  (must precede MuJoCo's EGL context: triton segfaults if imported after)
    import torch

    os.environ.setdefault("MUJOCO_GL", "egl")
    if threads:
        torch.set_num_threads(threads)
    from dexwm.sim import Rig

    for p in policies:
        p.setup(checkpoint)
    _WORKER.update(rig=Rig("allegro", size=size), policies=policies, options=options)


def _run_job(job: tuple[int, str, int]) -> dict:
    pi, task, index = job
    opts = _WORKER["options"]
    policy = _WORKER["policies"][pi]
    seen = [] if opts.get("collect_dir") else None
    record, frames = run_episode(
        _WORKER["rig"], policy, task, index, max_steps=opts["max_steps"],
        stop_on_success=opts["stop_on_success"], video=opts["video_dir"] is not None,
        observations=seen,
    )  # fmt: skip
    if seen is not None:
        from dexwm.control.collect import write_episode_shard

        name = f"{policy.name}_{task}_{index:02d}"
        record["shard"] = write_episode_shard(_WORKER["rig"], seen, opts["collect_dir"], name)
    if frames is not None:
        path = Path(opts["video_dir"]) / policy.name / f"{task}_{index:02d}.gif"
        write_gif(path, frames)
        record["video"] = str(path)
    return record


def evaluate(
    policies: list[Policy] | None = None,
    tasks: list[str] | tuple[str, ...] = ("reach", "grasp", "place"),
    episodes: int | list[int] = 50,
    checkpoint: str | None = None,
    out: str | Path | None = None,
    workers: int = 1,
    threads: int = 1,
    video: bool = True,
    size: int = 128,
    max_steps: int | None = None,
    stop_on_success: bool = True,
    resume: bool = False,
    collect: str | Path | None = None,
    ceiling: bool = False,
    on_record: Callable[[dict], None] | None = None,
    server: str | None = None,
) -> dict:
    """Run every policy on `episodes` (a count from 0, or indices) of every task; returns
    {"episodes": [records], "summary": {policy: {task: {...}}}, "config": {...}} and writes it
    to `out` (see the module docstring). `collect`: also write every episode as a shard (schema
    v1) into this folder, for data aggregation. `ceiling`: also run every model-based policy with
    the simulator as its model (`<name>-perfect`: same planner, cost and budget), its ceiling.
    `threads`: torch threads of each worker, and of this process while it runs the episodes
    itself (`workers` 1; its own count is restored afterwards; 0 leaves it alone).
    `on_record(record)` is called as episodes finish. `server`: plan through the planning server
    at this URL (`plan.py serve`) instead; the policies are replaced by one `RemotePolicy`, named
    "server"."""
    from dexwm.sim.tasks import N_EPISODES, TASKS

    if server is not None:
        from dexwm.control.remote import RemotePolicy

        policies = [RemotePolicy(server)]
    policies = list(policies or [])
    if ceiling:
        policies += [p for p in map(perfect_model, policies) if p is not None]
    names = [p.name for p in policies]
    if not policies or len(set(names)) != len(names):
        raise ValueError(f"give at least one policy, with unique names; got {names}")
    for t in tasks:
        if t not in TASKS:
            raise ValueError(f"unknown task {t!r}; tasks: {TASKS}")
    indices = list(range(episodes)) if isinstance(episodes, int) else [int(i) for i in episodes]
    if not indices or any(not 0 <= i < N_EPISODES for i in indices):
        raise ValueError(f"episodes must lie in 0..{N_EPISODES - 1}, got {episodes}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    for p in policies:  # missing files fail here, not inside a worker process
        p.check()
    out = Path(out) if out is not None else None
    done: list[dict] = []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        log = out / "episodes.jsonl"
        if resume and log.exists():
            done = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        elif log.exists():
            log.unlink()
    finished = {(r["policy"], r["task"], r["episode"]) for r in done}
    jobs = [
        (pi, t, i)
        for i in indices
        for t in tasks
        for pi, p in enumerate(policies)
        if (p.name, t, i) not in finished
    ]
    opts = dict(
        max_steps=max_steps,
        stop_on_success=stop_on_success,
        video_dir=str(out / "videos") if (video and out is not None) else None,
        collect_dir=None if collect is None else str(collect),
    )
    records = list(done)

    def finish(rec: dict) -> None:
        records.append(rec)
        if out is not None:
            with open(out / "episodes.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")
        if on_record is not None:
            on_record(rec)

    if workers == 1 or len(jobs) <= 1:
        import torch

        # in-process: the same torch thread count as a worker would use (float rounding, and so
        # a rerun of one episode, depends on it), the caller's restored afterwards
        before = torch.get_num_threads()
        try:
            _init_worker(policies, checkpoint, size, threads, opts, worker=False)
            for job in jobs:
                finish(_run_job(job))
        finally:
            torch.set_num_threads(before)
        for p in policies:
            p.close()
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(
            workers, ctx, initializer=_init_worker,
            initargs=(policies, checkpoint, size, threads, opts),
        ) as pool:  # fmt: skip
            for fut in as_completed([pool.submit(_run_job, j) for j in jobs]):
                finish(fut.result())
    order = {n: k for k, n in enumerate(names)}
    records.sort(key=lambda r: (order.get(r["policy"], 99), r["task"], r["episode"]))
    result = {
        "episodes": records,
        "summary": summarize(records),
        "config": {"tasks": list(tasks), "episodes": indices, "checkpoint": checkpoint,
                   "max_steps": max_steps, "stop_on_success": stop_on_success, "size": size},
    }  # fmt: skip
    if out is not None:
        (out / "summary.json").write_text(json.dumps(result["summary"], indent=1))
        (out / "summary.md").write_text(summary_markdown(result["summary"]))
        budgets = {
            (s.get("all") or next(iter(s.values())))["evaluations_per_step"]
            for s in result["summary"].values()
        }
        if len(budgets) > 1:
            plot_budget(result["summary"], out / "budget.png")
    return result


def perfect_model(policy: Policy) -> Policy | None:
    """A copy of a model-based policy (MPC, possibly staged) that plans with the simulator as
    its model, named `<name>-perfect`; None for policies without a model."""
    import copy

    from dexwm.control.policy import MPCPolicy
    from dexwm.control.staged import Staged

    inner = policy.policy if isinstance(policy, Staged) else policy
    if not isinstance(inner, MPCPolicy):
        return None
    twin = copy.deepcopy(policy)
    (twin.policy if isinstance(twin, Staged) else twin).model = "simulator"
    twin.name = f"{policy.name}-perfect"
    return twin


def plot_budget(summary: dict, png: Path) -> None:
    """Success (both threshold sets) against planning budget: model rollouts per control step of
    every policy that plans (policies with 0 rollouts, the baselines, are drawn as lines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in ORDER if any(t in s for s in summary.values())]
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.2), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        rows = sorted(
            (s[task]["evaluations_per_step"], name, s[task])
            for name, s in summary.items()
            if task in s
        )
        planners = [(b, n, s) for b, n, s in rows if b > 0]
        for key, style in (("success_dexwm", "o-"), ("success_strict", "s--")):
            if planners:
                ax.plot([b for b, _, _ in planners], [s[key] for _, _, s in planners], style,
                        label=key.split("_")[1])  # fmt: skip
        for _, name, s in rows:
            if _ == 0:
                ax.axhline(s["success_dexwm"], color="grey", lw=0.8, ls=":")
                ax.annotate(name, (0.02, s["success_dexwm"]), xycoords=("axes fraction", "data"),
                            fontsize=7, color="grey")  # fmt: skip
        for b, name, s in planners:
            ax.annotate(name, (b, s["success_dexwm"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")  # fmt: skip
        if planners:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set(title=task, xlabel="model rollouts per control step", ylim=(-0.05, 1.05))
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("success rate")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def load_policies(config: str | Path) -> list[Policy]:
    """The `policies:` of a plan config (configs/plan/*.yaml), instantiated, e.g. for
    `evaluate(load_policies("configs/plan/default.yaml"), episodes=5, checkpoint=...)`."""
    from dexwm.config import load

    return load(evaluate, config)["policies"]


# ---- summaries --------------------------------------------------------------------------------


def _mean(values: list) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def summarize(records: list[dict]) -> dict:
    """{policy: {task: stats, "all": stats}}: episodes, success rates under both threshold sets,
    mean final distance / lift, planning time per control step, candidates rolled out per step."""
    from dexwm.sim.tasks import DEXWM_TASKS

    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["policy"], r["task"])].append(r)
        if r["task"] in DEXWM_TASKS:  # "all": DexWM's three tasks (pick_place on its own)
            groups[(r["policy"], "all")].append(r)
    out: dict[str, dict] = defaultdict(dict)
    for (policy, task), rs in groups.items():
        steps = sum(r["steps"] for r in rs)
        out[policy][task] = {
            "episodes": len(rs),
            "success_dexwm": _mean([r["success_dexwm"] for r in rs]),
            "success_strict": _mean([r["success_strict"] for r in rs]),
            "final_distance": _mean([r.get("final_distance") for r in rs]),
            "final_lift": _mean([r.get("final_lift") for r in rs]),
            "plan_s_per_step": sum(r["plan_s_per_step"] * r["steps"] for r in rs) / max(steps, 1),
            "evaluations_per_step": sum(r.get("evaluations", 0) for r in rs) / max(steps, 1),
            "steps": steps,
        }
    return dict(out)


def summary_markdown(summary: dict) -> str:
    """One row per policy and task."""
    head = (
        "| policy | task | episodes | success (dexwm) | success (strict) | final distance (m) "
        "| final lift (m) | plan s / step | rollouts / step |\n|---|---|---|---|---|---|---|---|---|\n"
    )

    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    rows = []
    for policy, tasks in summary.items():
        for task in [t for t in ORDER if t in tasks]:
            s = tasks[task]
            rows.append(
                f"| {policy} | {task} | {s['episodes']} | {f(s['success_dexwm'], '.0%')} | "
                f"{f(s['success_strict'], '.0%')} | {f(s['final_distance'], '.3f')} | "
                f"{f(s['final_lift'], '.3f')} | {f(s['plan_s_per_step'], '.3f')} | "
                f"{f(s['evaluations_per_step'], '.0f')} |"
            )
    return head + "\n".join(rows) + "\n"
