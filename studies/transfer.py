"""Does other data help the Allegro model? The transfer study across embodiments (and human video).

Every arm trains the same model preset for the same steps with the same seed on its own data mix,
then is measured the same way: open-loop rollouts on the same held-out Allegro episodes (`run_eval`:
feature error per step beside copy-last and shuffled actions, PCK with one shared keypoint probe),
per-clip errors for paired z between arms (`studies.paired`), and planning on the Allegro tasks
with MPC through the model alone (`dexwm.control.evaluate`, configs/plan/model_only.yaml).
`python study.py` runs it; `report.md` holds the numbers, the goal checks and a plot.

Data. Episodes of an embodiment form one pool, indexed from 0 and seeded by (seed, index): an arm
with n episodes trains on indices 0..n-1, so an arm with fewer episodes of an embodiment holds a
subset of an arm with more (A's Allegro episodes are in D, and B's are A's). The pool is written
in chunks between the counts the arms ask for (e.g. 0-40, 40-320), each chunk its own shard folder,
so every arm reads whole folders. Held-out Allegro episodes start at index 100,000.

Resuming: every stage's record {key, seconds, result} is in <out>/stages.json. A stage is reused
while its key (the settings it depends on) is unchanged; otherwise, or when named in `fresh`, its
folder is removed and it runs again. Shard and feature folders carry their settings in their
paths, and the sim / feature jobs resume inside themselves, as training resumes from last.ckpt.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing as mp
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from dexwm.io import atomic_write_json
from studies.transfer_stages import evaluate_arm, plan_arm, train_arm

REPO = Path(__file__).resolve().parents[1]
EMBODIMENTS = ("allegro", "shadow", "panda_gripper")
HELDOUT_START = 100_000
ARMS = [f"configs/study/arms/{a}.yaml" for a in "ABCD"]


@dataclass(kw_only=True)
class Arm:
    """One arm: the training data of its model (configs/study/arms/*.yaml).

    Args:
        name: short label (A, B, ...): the arm's folder and its name in the report.
        description: one line for the report.
        episodes: training episodes per embodiment (allegro, shadow, panda_gripper): indices
            0..n-1 of that embodiment's pool.
        weights: mixing weight per source (an embodiment, or "human"); 1 when not given.
        human: also train on the study's human-video shards (`human`), when it names some.
        init: the arm whose trained model this arm starts from (pretrain, then fine-tune on this
            arm's data: DexWM's recipe); it must come earlier in the study's arm list. Its
            normalisation statistics come with it (so `stats_from` cannot be given too).
        stats_from: the sources (embodiment names, "human") the normalisation statistics are
            fitted on; None: all the arm's training sources.
        seed: training seed of this arm (None: the study's); an arm that repeats another with a
            new seed measures run-to-run variation of training.
    """

    name: str
    description: str = ""
    episodes: dict[str, int] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    human: bool = False
    init: str | None = None
    stats_from: list[str] | None = None
    seed: int | None = None


@dataclass(kw_only=True)
class StudyConfig:
    """The transfer study: arms trained alike, evaluated and planned on held-out Allegro data.

    Args:
        arms: arm files (configs/study/arms/*.yaml); relative paths are read from the repository.
        heldout: held-out Allegro episodes (indices from 100,000), shared by every arm.
        frames: frames per simulated episode, 10 Hz.
        train_steps: training steps of every arm.
        eval_horizon: open-loop rollout steps of 0.2 s.
        eval_clips: held-out clips (at most).
        plan_episodes: planning episodes per task and arm.
        out: study folder.
        model: model preset (read, never copied); relative paths are read from the repository.
        train: training config.
        eval: evaluation config (its data, checkpoint, out_dir and baselines are the study's).
        plan: planning config: its first policy is the planner whose success is compared (MPC
            through the model alone: the default planner's BC prior would steer the plans).
        human: folders of human-video shards (data_prep.human_video); arms with `human: true`
            train on their features too.
        episode_scale: every arm's episode counts times this, rounded up (tiny runs).
        size: frame side in pixels.
        batch_size: training batch size.
        clips_per_sample: distinct clip starts per held-out episode.
        probe_episodes: Allegro training episodes (0..n-1) the shared keypoint probe learns from.
        probe_steps: keypoint-probe training steps (None: the eval config's).
        plan_tasks: planning tasks (None: the plan config's).
        plan_max_steps: control steps per planning episode (None: the task's budget).
        plan_video: write a GIF per planning episode.
        compare: paired comparisons [better, reference] of rollout error per step; a reference
            `copy_last` is the copy-last baseline on the same clips.
        goal_beats: comparisons that must reach z >= goal_z at every step.
        goal_z: the paired z a goal comparison needs.
        goal_plan: [arm, reference]: the arm's planning success must reach goal_plan_ratio x the
            reference's.
        goal_plan_ratio: see goal_plan.
        workers: parallel processes for data preparation and planning.
        seed: seed of data, training, evaluation clips and planning.
        fresh: stages to redo (names as in stages.json, e.g. "train B"); the others are reused.
    """

    arms: list[str]
    heldout: int
    frames: int
    train_steps: int
    eval_horizon: int
    eval_clips: int
    plan_episodes: int
    out: str = "runs/study/transfer"
    model: str = "configs/model/tiny.yaml"
    train: str = "configs/train/tiny.yaml"
    eval: str | None = "configs/eval/tiny.yaml"
    plan: str = "configs/plan/model_only.yaml"
    human: list[str] = field(default_factory=list)
    episode_scale: float = 1.0
    size: int = 128
    batch_size: int = 32
    clips_per_sample: int = 1
    probe_episodes: int = 40
    probe_steps: int | None = None
    plan_tasks: list[str] | None = None
    plan_max_steps: int | None = None
    plan_video: bool = False
    compare: list[list[str]] = field(
        default_factory=lambda: [["B", "A"], ["C", "copy_last"], ["D", "A"]]
    )
    goal_beats: list[list[str]] = field(default_factory=lambda: [["B", "A"], ["C", "copy_last"]])
    goal_z: float = 2.0
    goal_plan: list[str] = field(default_factory=lambda: ["C", "D"])
    goal_plan_ratio: float = 0.7
    workers: int = 1
    seed: int = 0
    fresh: list[str] = field(default_factory=list)


def repo_path(p: str) -> Path:
    """A config path: absolute or relative to the current folder when it exists there, else
    relative to the repository."""
    return Path(p) if Path(p).is_absolute() or Path(p).exists() else REPO / p


def digest(*parts) -> str:
    """A short hash of settings and file contents (a stage's key, a folder tag)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def file_text(p: str | None) -> str | None:
    return None if p is None else repo_path(p).read_text()


class Stages:
    """Named stages run once per key; {key, seconds, result} in <out>/stages.json, atomically."""

    def __init__(self, out: Path, fresh: list[str]) -> None:
        self.path, self.fresh = out / "stages.json", set(fresh)
        self.done: dict = json.loads(self.path.read_text()) if self.path.exists() else {}

    def run(self, name: str, key: str, fn: Callable[[], dict], folder: Path | None = None) -> dict:
        rec = self.done.get(name)
        if rec and rec["key"] == key and name not in self.fresh:
            print(f"[study] {name}: done before ({rec['seconds']:.0f} s), reused", flush=True)
            return rec["result"]
        if rec and folder is not None and folder.exists():  # settings changed, or asked to redo
            shutil.rmtree(folder)
        print(f"[study] {name} ...", flush=True)
        t0 = time.time()
        result = fn()
        self.done[name] = {"key": key, "seconds": round(time.time() - t0, 1), "result": result}
        atomic_write_json(self.path, self.done)
        print(f"[study] {name}: {self.done[name]['seconds']:.0f} s", flush=True)
        return result


def load_arms(cfg: StudyConfig) -> list[Arm]:
    from dexwm.config import load

    arms = [load(Arm, repo_path(p)) for p in cfg.arms]
    for a in arms:
        a.episodes = {e: math.ceil(n * cfg.episode_scale) for e, n in a.episodes.items()}
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise ValueError(f"arm names must be unique, got {names}")
    for a in arms:
        bad = set(a.episodes) - set(EMBODIMENTS)
        if bad or any(n < 0 for n in a.episodes.values()):
            raise ValueError(f"arm {a.name}: episodes per {EMBODIMENTS} (>= 0), got {a.episodes}")
        if not any(a.episodes.values()) and not (a.human and cfg.human):
            raise ValueError(f"arm {a.name}: no training data")
    for i, a in enumerate(arms):
        if a.init is not None and a.init not in names[:i]:
            raise ValueError(f"arm {a.name}: init {a.init!r} must name an arm listed before it")
        if a.init is not None and a.stats_from is not None:
            raise ValueError(f"arm {a.name}: init brings its statistics; drop stats_from")
        sources = {e for e, n in a.episodes.items() if n > 0} | ({"human"} if a.human and cfg.human else set())  # fmt: skip
        if a.stats_from is not None and (not a.stats_from or set(a.stats_from) - sources):
            raise ValueError(f"arm {a.name}: stats_from {a.stats_from} must name its sources {sorted(sources)}")  # fmt: skip
    return arms


def chunks(cfg: StudyConfig, arms: list[Arm]) -> dict[str, list[tuple[int, int]]]:
    """Per embodiment, the pool's chunks (start, end) between the episode counts arms ask for."""
    out = {}
    for emb in EMBODIMENTS:
        counts = {a.episodes.get(emb, 0) for a in arms} | (
            {cfg.probe_episodes} if emb == "allegro" else set()
        )
        bounds = [0, *sorted(c for c in counts if c > 0)]
        out[emb] = list(zip(bounds[:-1], bounds[1:]))
    return out


class Study:
    """The study's folders and stages (see the module docstring)."""

    def __init__(self, cfg: StudyConfig) -> None:
        from dexwm.config import load
        from dexwm.training.module import WorldModelModule

        paths = {k: str(repo_path(getattr(cfg, k))) for k in ("model", "train", "plan")}
        cfg = replace(cfg, **paths, eval=cfg.eval and str(repo_path(cfg.eval)))
        self.cfg, self.out = cfg, Path(cfg.out)
        self.arms = load_arms(cfg)
        self.chunks = chunks(cfg, self.arms)
        self.spec = load(WorldModelModule, cfg.model, section="model").wm.encoder_spec.to_dict()
        data = self.out / "data" / f"{cfg.frames}f-{cfg.size}px-seed{cfg.seed}"
        self.shards, self.feats = data / "shards", data / f"feats-{digest(self.spec)}"
        self.stages = Stages(self.out, cfg.fresh)
        self.trained: dict[str, dict] = {}  # arm name -> {key, checkpoint} of its trained model

    # ---- data --------------------------------------------------------------------------------
    def pool_folders(self) -> dict[str, tuple[str, int, int]]:
        """name -> (embodiment, start, episodes) of every shard folder to prepare."""
        out = {f"{e}/{a}-{b}": (e, a, b - a) for e, cs in self.chunks.items() for a, b in cs}
        end = HELDOUT_START + self.cfg.heldout
        out[f"heldout/allegro/{HELDOUT_START}-{end}"] = ("allegro", HELDOUT_START, self.cfg.heldout)
        return out

    def prepare(self) -> None:
        from data_prep.sim_episodes import main as sim_episodes
        from dexwm.data.feature_cache import cache_features
        from dexwm.models.encoders import FrozenEncoder

        cfg = self.cfg
        # Each job renders in a fresh process (as demo_stages.stage_sim): OpenGL contexts of
        # several robots never share one process, and the study process never opens one.
        with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"), max_tasks_per_child=1) as pool:  # fmt: skip
            for name, (emb, start, n) in self.pool_folders().items():
                folder = self.shards / name

                def sim(emb=emb, start=start, n=n, folder=folder) -> dict:
                    man = pool.submit(
                        sim_episodes, embodiment=emb, out=folder, episodes=n, frames=cfg.frames,
                        size=cfg.size, seed=cfg.seed, start=start, workers=cfg.workers,
                        items_per_shard=8,
                    ).result()  # fmt: skip
                    return {"folder": str(folder), **man["counts"]}

                self.stages.run(f"sim {name}", str(folder), sim)
        sources = {n: str(self.shards / n) for n in self.pool_folders()}
        sources |= {f"human/{i}": str(Path(h).resolve()) for i, h in enumerate(cfg.human)}
        for name, src in sources.items():
            dst = self.feats / name

            def feats(src=src, dst=dst) -> dict:
                man = cache_features(src, dst, self.spec, FrozenEncoder, workers=cfg.workers)
                return {"folder": str(dst), **man["counts"]}

            self.stages.run(f"features {name}", digest(src, str(dst)), feats)

    def train_sources(self, arm: Arm) -> list[dict]:
        sources = []
        for emb, n in arm.episodes.items():
            if n > 0:
                paths = [str(self.feats / f"{emb}/{a}-{b}") for a, b in self.chunks[emb] if b <= n]
                sources.append({"paths": paths, "name": emb, "weight": arm.weights.get(emb, 1.0)})
        if arm.human and self.cfg.human:
            paths = [str(self.feats / f"human/{i}") for i in range(len(self.cfg.human))]
            sources.append({"paths": paths, "name": "human", "weight": arm.weights.get("human", 1.0)})  # fmt: skip
        return sources

    def heldout(self) -> dict:
        name = next(n for n in self.pool_folders() if n.startswith("heldout/"))
        return {"paths": [str(self.feats / name)], "name": "allegro_heldout"}

    def alignment(self) -> dict:
        """How the embodiments' data line up (studies.transfer_alignment), one stage."""
        from studies.transfer_alignment import alignment, clip_config

        first = {e: [str(self.shards / f"{e}/{cs[0][0]}-{cs[0][1]}")] for e, cs in self.chunks.items() if cs}  # fmt: skip
        fitted: dict[str, list[dict]] = {}  # arm -> the sources its statistics come from
        for a in self.arms:
            src = self.train_sources(a)
            if a.init is not None:
                src = fitted[a.init]
            elif a.stats_from is not None:
                src = [s for s in src if s["name"] in a.stats_from]
            fitted[a.name] = src
        target = {"name": "allegro", "paths": [str(self.feats / f"allegro/{a}-{b}")
                  for a, b in self.chunks["allegro"] if b <= self.cfg.probe_episodes]}  # fmt: skip
        clip = clip_config(self.cfg.model, self.cfg.train)
        return self.stages.run(
            "alignment", digest(first, fitted, target, str(clip)),
            lambda: alignment(first, fitted, target, clip),
        )  # fmt: skip

    # ---- one arm -----------------------------------------------------------------------------
    def run_arm(self, arm: Arm) -> dict:
        cfg, folder = self.cfg, self.out / "arms" / arm.name
        sources = self.train_sources(arm)
        init = None if arm.init is None else self.trained[arm.init]
        parts = [sources, cfg.train_steps, cfg.batch_size, cfg.seed, file_text(cfg.model),
                 file_text(cfg.train)]  # fmt: skip
        if init is not None or arm.stats_from is not None:  # keys of earlier arms stay as they were
            parts += [init and init["key"], arm.stats_from]
        if arm.seed is not None:
            parts += [{"seed": arm.seed}]
        key = digest(*parts)
        train = self.stages.run(
            f"train {arm.name}", key,
            lambda: train_arm(cfg, sources, self.heldout(), folder / "train",
                              init=init and init["checkpoint"], stats_from=arm.stats_from,
                              seed=arm.seed),
            folder / "train",
        )  # fmt: skip
        self.trained[arm.name] = {"key": key, "checkpoint": train["checkpoint"]}
        probe = {"paths": [str(self.feats / f"allegro/{a}-{b}") for a, b in self.chunks["allegro"]
                           if b <= cfg.probe_episodes], "name": "allegro_probe"}  # fmt: skip
        ev_key = digest(key, file_text(cfg.eval), cfg.eval_horizon, cfg.eval_clips,
                        cfg.clips_per_sample, cfg.probe_steps, cfg.probe_episodes)  # fmt: skip
        ev = self.stages.run(
            f"evaluate {arm.name}", ev_key,
            lambda: evaluate_arm(cfg, train["checkpoint"], self.heldout(), probe, self.out, folder / "eval"),
            folder / "eval",
        )  # fmt: skip
        plan_key = digest(key, file_text(cfg.plan), cfg.plan_episodes, cfg.plan_tasks,
                          cfg.plan_max_steps, cfg.plan_video)  # fmt: skip
        plan = self.stages.run(
            f"plan {arm.name}", plan_key, lambda: plan_arm(cfg, train["checkpoint"], folder / "plan"),
            folder / "plan",
        )  # fmt: skip
        seconds = {s: self.stages.done[f"{s} {arm.name}"]["seconds"] for s in ("train", "evaluate", "plan")}  # fmt: skip
        return {"arm": asdict(arm), "sources": sources, "train": train, "eval": ev, "plan": plan,
                "seconds": seconds}  # fmt: skip


def run_study(cfg: StudyConfig) -> Path:
    """Prepare what is missing, train / evaluate / plan every arm, write the report; -> report.md."""
    from studies.transfer_report import write_report

    t0 = time.time()
    study = Study(cfg)
    study.out.mkdir(parents=True, exist_ok=True)
    study.prepare()
    arms = {arm.name: study.run_arm(arm) for arm in study.arms}
    align = study.alignment()
    report = write_report(study.out, cfg, arms, study.stages.done, wall=time.time() - t0,
                          alignment=align)  # fmt: skip
    print(f"[study] report: {report}", flush=True)
    return report
