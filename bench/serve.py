"""Planning-server overhead: the round trip of `act` through `plan.py serve` (a real server
process, real sockets, msgpack) against the same planning in-process, with 1 and 4 concurrent
clients.

Usage:
  python bench/serve.py [--config configs/plan/default.yaml] [--checkpoint CKPT] [--calls 30]
                        [--threads 2] [--out bench/results/serve.json]

The in-process policy (the config's first MPC policy) drives a reach episode of the rig for
`calls` planning calls; its frames and joint targets are recorded and replayed by every client,
so the server plans exactly what was planned in-process (`identical_actions` checks it). With
one client, every call is made twice in turn, in-process (a second copy of the policy replaying
the same observations) then through the server, so both see the same machine load.
Figures per call (the first call of each run is a warm-up and not counted):
  in_process.plan_s     policy.act in this process (encode + planning): the reference;
  round_trip_s          client.act, from sending the request to the reply decoded;
  overhead_s            round trip - the server's own plan time - its queue wait: transport,
                        codec, checks, scheduling (what serving adds to a plan);
  extra_vs_in_process_s round trip - the in-process time of the same call (1 client: paired),
                        which also counts any difference in planning speed between processes;
  queue_s               waiting for other clients' plans (plans run one at a time);
  *_vs_plan             a p50 above / the in-process plan p50 (acceptance: overhead <= 10 %).
Without --checkpoint the tiny preset with random predictor weights is used (timing does not
depend on the weights). Other jobs on the machine inflate every number: the load average is
stored.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import importlib.util  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import timm  # noqa: E402, F401  (before MuJoCo's EGL context)
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLIENT = ROOT / "clients" / "python"


def stats(values: list[float]) -> dict:
    v = np.asarray(values, float)
    return {"p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99)),
            "mean": float(v.mean()), "n": len(v)}  # fmt: skip


def record_episode(policy, rig, calls: int) -> tuple[np.ndarray, list[dict], list[float], list]:
    """The in-process policy on reach episode 0: goal, observations seen, seconds per act,
    targets returned."""
    obs = rig.reset("reach", 0)
    goal = rig.goal_image("reach", 0)
    policy.reset(rig, goal, obs)
    seen, times, actions = [], [], []
    for _ in range(calls + 1):
        seen.append({"image": obs["image"], "joints": obs["commanded"].copy()})
        t = time.perf_counter()
        targets = policy.act(obs)
        times.append(time.perf_counter() - t)
        actions.append(targets)
        for q in targets:
            obs = rig.step(q)
    return goal, seen, times[1:], actions


def start_server(checkpoint: str, config: str, threads: int, log: Path) -> tuple:
    """`plan.py serve` on a free port of 127.0.0.1 -> (process, url); its log goes to `log`."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(CLIENT)]))
    cmd = [sys.executable, str(ROOT / "plan.py"), "serve", "--checkpoint", checkpoint,
           "--config", config, "--port", "0", "--threads", str(threads)]  # fmt: skip
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err,
                                text=True)  # fmt: skip
    for line in proc.stdout:
        if line.startswith("dexwm planning server: "):
            return proc, line.split()[3]
    raise RuntimeError(f"the server did not start:\n{log.read_text()[-3000:]}")


def replay(url: str, goal: np.ndarray, seen: list[dict], out: dict, local=None) -> None:
    """One client: reset, then every recorded observation; per call timings and targets. With
    `local` = (policy, rig), each call is first made in-process by that policy (timed)."""
    from dexwm_client import PlanningClient

    if local is not None:
        policy, rig = local
        policy.reset(rig, goal, {"image": goal})
    with PlanningClient(url) as client:
        client.reset(goal, seed=0, task="reach")
        rows = []
        for obs in seen:
            here = float("nan")
            if local is not None:
                t = time.perf_counter()
                policy.act({"image": obs["image"], "commanded": obs["joints"]})
                here = time.perf_counter() - t
            targets = client.act(obs)
            t = client.last["timing"]
            rows.append((t["round_trip_s"], t["plan_s"], t["queue_s"], here, targets))
    out["rows"] = rows[1:]  # the first call warms up the connection
    out["targets"] = [r[4] for r in rows]


def run_clients(url: str, goal, seen, clients: int, local=None) -> dict:
    outs = [{} for _ in range(clients)]
    threads = [threading.Thread(target=replay, args=(url, goal, seen, o, local)) for o in outs]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    rows = [r for o in outs for r in o["rows"]]
    rt, plan, queue, here = (np.array([r[i] for r in rows]) for i in range(4))
    out = {
        "clients": clients,
        "round_trip_s": stats(rt),
        "server_plan_s": stats(plan),
        "queue_s": stats(queue),
        "overhead_s": stats(rt - plan - queue),
        "targets": [o["targets"] for o in outs],
    }
    if local is not None:
        out["in_process_s"] = stats(here)
        out["extra_vs_in_process_s"] = stats(rt - here)
    else:
        out["plans_per_s"] = clients * len(seen) / wall
    return out


def main(
    config: str = "configs/plan/default.yaml",
    checkpoint: str | None = None,
    calls: int = 30,
    threads: int = 2,
    out: str = "bench/results/serve.json",
) -> dict:
    sys.path.append(str(CLIENT))
    from dexwm.control.episodes import load_policies
    from dexwm.control.policy import MPCPolicy
    from dexwm.sim import Rig

    torch.set_num_threads(threads)
    load0 = os.getloadavg()
    rig = Rig("allegro", size=128)
    with tempfile.TemporaryDirectory() as tmp:
        if checkpoint is None:  # bench/plan.py's tiny preset with random predictor weights
            spec = importlib.util.spec_from_file_location("bench_plan", ROOT / "bench/plan.py")
            bench_plan = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(bench_plan)
            checkpoint = str(Path(tmp) / "tiny.pt")
            bench_plan.build_model("tiny").save(checkpoint)
        # two copies of the served policy: one records the episode, one replays it in turn
        policy, twin = (
            next(p for p in load_policies(config) if isinstance(p, MPCPolicy)) for _ in range(2)
        )
        policy.setup(checkpoint)
        twin.setup(checkpoint)
        goal, seen, in_process, actions = record_episode(policy, rig, calls)
        proc, url = start_server(checkpoint, config, threads, Path(tmp) / "server.log")
        try:
            runs = [run_clients(url, goal, seen, 1, (twin, rig)), run_clients(url, goal, seen, 4)]
        finally:
            proc.terminate()
            proc.wait(30)
    rig.close()
    ref = stats(in_process)
    identical = all(
        np.array_equal(a, b) for r in runs for tg in r.pop("targets") for a, b in zip(tg, actions)
    )
    for r in runs:
        r["overhead_vs_plan"] = r["overhead_s"]["p50"] / ref["p50"]
        r["overhead_vs_server_plan"] = r["overhead_s"]["p50"] / r["server_plan_s"]["p50"]
        if "extra_vs_in_process_s" in r:
            r["extra_vs_plan"] = r["extra_vs_in_process_s"]["p50"] / r["in_process_s"]["p50"]
    results = {
        "config": config, "policy": policy.name, "planner": repr(policy.planner),
        "calls": calls, "threads": threads, "in_process": {"plan_s": ref},
        "server": {f"{r['clients']}_clients": r for r in runs},
        "identical_actions": identical, "load_avg_start": load0, "load_avg_end": os.getloadavg(),
        "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
    }  # fmt: skip
    print(f"{policy.name} ({policy.planner!r}), {calls} calls, {threads} threads")
    print(f"in-process plan: p50 {ref['p50'] * 1e3:.1f} ms, p99 {ref['p99'] * 1e3:.1f} ms")
    for r in runs:
        o, rt, q = r["overhead_s"], r["round_trip_s"], r["queue_s"]
        line = (
            f"{r['clients']} client(s): round trip p50 {rt['p50'] * 1e3:.1f} ms p99 "
            f"{rt['p99'] * 1e3:.1f} ms; overhead p50 {o['p50'] * 1e3:.2f} ms p99 "
            f"{o['p99'] * 1e3:.2f} ms = {r['overhead_vs_plan']:.1%} of the in-process plan"
        )
        if "extra_vs_in_process_s" in r:
            e = r["extra_vs_in_process_s"]
            line += (
                f"; vs the same call in-process (p50 {r['in_process_s']['p50'] * 1e3:.1f} ms): "
                f"+{e['p50'] * 1e3:.1f} ms p50 ({r['extra_vs_plan']:+.1%}), +{e['p99'] * 1e3:.1f} ms p99"
            )
        else:
            line += f"; queue p50 {q['p50'] * 1e3:.1f} ms; {r['plans_per_s']:.2f} plans/s"
        print(line)
    print(f"identical actions (server vs in-process): {identical}")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(results, indent=1, default=str))
    print(f"written {out} (load {load0[0]:.1f} -> {results['load_avg_end'][0]:.1f})")
    return results


if __name__ == "__main__":
    from jsonargparse import CLI

    CLI(main, as_positional=False)
