"""Why planning succeeds or fails, measured (plan.py diagnose):

1. cost fidelity along scripted oracle episodes: the rank correlation (Spearman) of each cost term
   with the task's true distance, frame by frame, and the cost of telling states relative to the
   start state: the success state the oracle reaches, the hand posed with the object unmoved, the
   object placed with the hand elsewhere (a cost that sees the task puts success lowest);
2. model ranking fidelity: from states along those episodes, candidate plans drawn from the
   planner's initial distribution are scored through the learned model AND executed in the
   simulator (`SimRollout`); the rank correlation of the two, and of each with the true distance;
3. the hand head's error locating the goal image's wrist and fingertips (a keypoint cost is only
   worth adding when this is small), and, with a goal-pose head (`PoseCost`), its error: the
   largest wrist/fingertip distance between FK of its estimate and FK of the goal joints.

The perfect-model planner itself is a policy (`MPCPolicy(model="simulator")`) run by the same
harness as every other (configs/plan/ceiling.yaml).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from dexwm.control.joint_space import JointSpace
from dexwm.control.model_rollout import ModelRollout
from dexwm.control.policy import MPCPolicy
from dexwm.control.sim_rollout import SimRollout, task_distance
from dexwm.io import atomic_write_json, atomic_write_text
from dexwm.planning.costs import Prediction

STATES = ("success", "hand_posed_object_unmoved", "object_placed_hand_elsewhere")


def _rho(a, b) -> float | None:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(spearmanr(a, b).statistic)


def _terms(policy: MPCPolicy, pred: Prediction) -> dict[str, np.ndarray]:
    """Each applying cost term (unweighted) and the weighted total, per candidate."""
    parts = {t.name: t(pred, policy.objective.goal) for t in policy.objective.terms}
    total = sum(t.weight * parts[t.name] for t in policy.objective.terms)
    return {**{k: v.numpy() for k, v in parts.items()}, "total": total.numpy()}


def _frames_prediction(policy: MPCPolicy, frames: list[np.ndarray], joints: list) -> Prediction:
    """Observed frames as one-step 'predictions' (B = frames, H = 1) for the cost terms."""
    q = torch.as_tensor(np.stack(joints), dtype=torch.float32)  # (B, J)
    feats = policy._encode_frames(torch.from_numpy(np.stack(frames)))[:, None]  # (B, 1, N, D)
    kp = policy.space.keypoints(q)[:, None].expand(-1, 2, -1, -1)  # (B, 2, 21, 3)
    return Prediction(feats, kp, q[:, None])


def _state_image(rig, joints, obj_pose) -> np.ndarray:
    return rig.render(None, rig.state_data(joints, rig.object, obj_pose))


def cost_fidelity(rig, policy: MPCPolicy, task: str, index: int) -> dict:
    """One oracle episode: per-frame costs vs true distance, and the telling states' costs."""
    from dexwm.sim.oracle import Oracle

    obs = rig.reset(task, index)
    ep = rig.episode
    policy.reset(rig, rig.goal_image(task, index), obs)
    start_q, start_obj = rig.target.copy(), (rig.object_position(), rig.object_yaw())
    frames, joints, dist = [obs["image"]], [obs["commanded"]], [task_distance(rig)]
    oracle = Oracle(rig)
    for _ in range(ep.max_steps):
        obs = rig.step(oracle.act())
        frames.append(obs["image"])
        joints.append(obs["commanded"])
        dist.append(task_distance(rig))
        if rig.success("strict") and rig.success("dexwm"):
            break
    goal_obj = ep.goal_object
    states = {
        "start": (frames[0], start_q),
        "success": (frames[-1], joints[-1]),
        "hand_posed_object_unmoved": (_state_image(rig, ep.goal_joints, start_obj), ep.goal_joints),
        "object_placed_hand_elsewhere": (_state_image(rig, start_q, goal_obj), start_q),
    }
    policy.objective.goal.current = policy._encode(frames[0])  # costs that look at the start
    along = _terms(policy, _frames_prediction(policy, frames, joints))
    at = _terms(policy, _frames_prediction(policy, [s[0] for s in states.values()],
                                            [s[1] for s in states.values()]))  # fmt: skip
    out = {"steps": len(frames) - 1, "rho_true_distance": {}, "relative_to_start": {}}
    for name in along:
        out["rho_true_distance"][name] = _rho(along[name], dist)
        c = at[name]
        out["relative_to_start"][name] = {
            s: float(c[i + 1] / c[0]) if c[0] > 0 else None for i, s in enumerate(STATES)
        }
    out["frames"], out["joints"] = frames, joints  # for ranking fidelity (not written)
    return out


def ranking_fidelity(
    rig, policy: MPCPolicy, task: str, index: int, joints: list, at: list[int], candidates: int
) -> list[dict]:
    """At steps `at` of a replayed trajectory (`joints`): learned vs simulated cost of the same
    candidates, and each against the true distance after the plan."""
    obs = rig.reset(task, index)
    policy.reset(rig, rig.goal_image(task, index), obs)
    gen = torch.Generator().manual_seed(1000 * index + 7)
    out, step = [], 0
    for k in sorted(at):
        while step < k:
            obs = rig.step(joints[step + 1])
            step += 1
        q0 = torch.as_tensor(rig.target, dtype=torch.float32)
        feats = policy._encode(obs["image"])
        policy.objective.goal.current = feats
        H = policy.horizon
        lo, hi = policy.space.bounds(q0, H)
        std = policy.space.spread(policy.std_arm, policy.std_hand)
        noise = torch.randn((candidates, H, len(q0)), generator=gen) * std
        plans = torch.maximum(torch.minimum(q0 + noise, hi), lo)  # (B, H, J)
        model = ModelRollout(policy.wm, policy.space, feats[None], q0[None])(plans)
        sim = SimRollout(rig, policy._encode_frames, policy.space)(plans)
        cm = _terms(policy, model)["total"]
        cs = _terms(policy, sim)["total"]
        d = sim.distance[:, -1].numpy()
        out.append({"step": k, "rho_model_sim": _rho(cm, cs), "rho_sim_true": _rho(cs, d),
                    "rho_model_true": _rho(cm, d)})  # fmt: skip
    return out


def hand_head_error(rig, policy: MPCPolicy, task: str, index: int) -> float | None:
    """Median pixel error (encoder input) of the hand head's goal-image wrist + fingertips."""
    wm = policy.wm
    if wm.hand_head is None:
        return None
    goal = rig.goal_image(task, index)
    pred = wm.hand_points(policy._encode(goal))  # (6, 2)
    size = goal.shape[:2]
    cmd = rig.commanded(rig.episode.goal_joints)
    true = rig.camera.pixels(rig.camera.to_camera(cmd["keypoints"][[0, 4, 8, 12, 16, 20]]), size[0])
    true = wm.uv_to_input(torch.as_tensor(true, dtype=torch.float32), size)
    return float((pred - true).norm(dim=-1).median())


def pose_head_error(rig, policy: MPCPolicy, task: str, index: int) -> float | None:
    """The goal-pose head's error on the goal image (m): largest distance over the wrist and
    fingertips between FK of its estimate and FK of the goal joints; None without a head."""
    if policy.goal_pose is None:
        return None
    from dexwm.control.goal_pose import hand_error

    policy._setup_pose_head()
    space = JointSpace.from_rig(rig)
    est = policy.pose_head(rig.goal_image(task, index), space)
    true = torch.as_tensor(rig.episode.goal_joints, dtype=torch.float32)
    return float(hand_error(space, est[None], true[None])[0])


def diagnose(
    policies: list[MPCPolicy],
    checkpoint: str,
    tasks: list[str] = ("reach", "grasp", "place", "pick_place"),  # noqa: B006 (read-only)
    episodes: int = 6,
    candidates: int = 32,
    out: str | None = None,
    size: int = 128,
    workers: int = 1,
) -> dict:
    """Cost fidelity, model ranking fidelity and the hand head's goal error for the first MPC
    policy of a plan config, on `episodes` oracle episodes per task (tasks in `workers`
    processes); writes diagnostics.json and diagnostics.md to `out`."""
    policy = next(p for p in policies if isinstance(p, MPCPolicy))
    jobs = [(policy, checkpoint, task, episodes, candidates, size) for task in tasks]
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        from dexwm.io import exit_with_parent

        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(workers, ctx, initializer=exit_with_parent) as pool:
            results = list(pool.map(_diagnose_task, jobs))
    else:
        results = [_diagnose_task(j) for j in jobs]
    report = {"policy": policy.name, "checkpoint": checkpoint, "tasks": dict(zip(tasks, results))}
    if out:
        atomic_write_json(Path(out) / "diagnostics.json", report)
        atomic_write_text(Path(out) / "diagnostics.md", markdown(report))
    return report


def _diagnose_task(job: tuple) -> dict:
    import os

    import timm  # noqa: F401  (before MuJoCo's EGL context: triton segfaults if imported after)

    os.environ.setdefault("MUJOCO_GL", "egl")
    from dexwm.sim import Rig

    policy, checkpoint, task, episodes, candidates, size = job
    policy.setup(checkpoint)
    rig = Rig("allegro", size=size)
    per = []
    for i in range(episodes):
        fid = cost_fidelity(rig, policy, task, i)
        frames, joints = fid.pop("frames"), fid.pop("joints")
        fid["ranking"] = ranking_fidelity(
            rig, policy, task, i, joints, [0, len(frames) // 2], candidates
        )
        fid["hand_head_px"] = hand_head_error(rig, policy, task, i)
        fid["pose_head_m"] = pose_head_error(rig, policy, task, i)
        per.append(fid)
    rig.close()
    return {"episodes": per, "median": _medians(per)}


def _median(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return float(np.median(xs)) if xs else None


def _medians(per: list[dict]) -> dict:
    names = per[0]["rho_true_distance"].keys()
    return {
        "rho_true_distance": {n: _median(p["rho_true_distance"][n] for p in per) for n in names},
        "relative_to_start": {
            n: {s: _median(p["relative_to_start"][n][s] for p in per) for s in STATES}
            for n in names
        },
        "ranking": {
            k: _median(r[k] for p in per for r in p["ranking"])
            for k in ("rho_model_sim", "rho_sim_true", "rho_model_true")
        },
        "hand_head_px": _median(p["hand_head_px"] for p in per),
        "pose_head_m": _median(p.get("pose_head_m") for p in per),
    }


def markdown(report: dict) -> str:
    def f(v):
        return "-" if v is None else f"{v:.2f}"

    lines = [
        f"# Planning diagnostics: {report['policy']}",
        "",
        "Medians over oracle episodes. rho: Spearman rank correlation; relative: cost of the "
        "state / cost of the start state.",
        "",
        "| task | term | rho vs true distance | success | hand posed, object unmoved "
        "| object placed, hand elsewhere |",
        "|---|---|---|---|---|---|",
    ]
    for task, r in report["tasks"].items():
        m = r["median"]
        for name, rho in m["rho_true_distance"].items():
            rel = m["relative_to_start"][name]
            lines.append(
                f"| {task} | {name} | {f(rho)} | " + " | ".join(f(rel[s]) for s in STATES) + " |"
            )
    lines += ["", "| task | rho model vs simulator | rho simulator vs true | rho model vs true "
              "| hand head goal error (px) | pose head goal error (m) |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for task, r in report["tasks"].items():
        k = r["median"]["ranking"]
        lines.append(f"| {task} | {f(k['rho_model_sim'])} | {f(k['rho_sim_true'])} | "
                     f"{f(k['rho_model_true'])} | {f(r['median']['hand_head_px'])} | "
                     f"{f(r['median'].get('pose_head_m'))} |")  # fmt: skip
    return "\n".join(lines) + "\n"
