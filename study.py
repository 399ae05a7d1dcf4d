"""The transfer study: does data of other embodiments (and human video) help the Allegro model?

Usage:
    python study.py                          # configs/study/transfer.yaml: arms A-D, report.md
    python study.py --quick                  # + configs/study/quick.yaml: tiny sizes (tests, CI)
    python study.py --human '[shards/human]' # arms with `human: true` also train on human video
    python study.py --fresh '[train B]'      # redo a stage (names as in <out>/stages.json)
    python study.py --print_config           # every setting (studies.transfer.StudyConfig)

Prepares what is missing (simulated episodes per embodiment, cached features, the held-out
Allegro episodes), then per arm (configs/study/arms/*.yaml): trains the model preset, evaluates it
on the held-out Allegro clips, plans the Allegro tasks with MPC through the model alone; writes
<out>/report.md (tables, paired z, goal checks, time per arm), study.json and a plot. A second
run reuses finished stages.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")  # offscreen rendering without a display
os.environ.setdefault("LP_NUM_THREADS", "1")  # Mesa software rendering: one thread per process

from dexwm.config import parse  # noqa: E402
from studies.transfer import StudyConfig, run_study  # noqa: E402

CONFIGS = Path(__file__).resolve().parent / "configs/study"


def main(argv: list[str] | None = None) -> Path:
    argv = sys.argv[1:] if argv is None else argv
    quick = ["--config", str(CONFIGS / "quick.yaml")]
    argv = [a for x in argv for a in (quick if x == "--quick" else [x])]
    cfg = parse(StudyConfig, ["--config", str(CONFIGS / "transfer.yaml"), *argv],
                description=__doc__.split("\n\n")[0])  # fmt: skip
    return run_study(cfg)


if __name__ == "__main__":
    main()
