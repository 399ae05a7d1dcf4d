"""Helpers for the planning-server tests: a real `plan.py serve` process on a free port."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLIENT = ROOT / "clients" / "python"
if str(CLIENT) not in sys.path:  # the client package, as `pip install clients/python` gives it
    sys.path.append(str(CLIENT))

# A small planner (fast on 2 cores) behind a baseline, with a second MPC policy after it: the
# server must serve the FIRST MPC policy. The orientation term (grasp only) needs the goal joints.
PLAN_CONFIG = """
policies:
  - class_path: dexwm.control.baselines.HoldPolicy
  - class_path: dexwm.control.MPCPolicy
    init_args:
      name: small_cem
      planner: {class_path: dexwm.planning.CEM, init_args: {samples: 16, elites: 4, iterations: 2}}
      costs:
        - class_path: dexwm.planning.FeatureCost
        - class_path: dexwm.planning.OrientationCost
      horizon: 3
      execute: 2
      std_arm: 0.08
      std_hand: 0.1
      max_step_arm: 0.15
      max_step_hand: 0.3
      seed: 5
  - class_path: dexwm.control.MPCPolicy
    init_args: {name: not_served}
"""


class Server:
    """`python plan.py serve ...` in its own process; `url` once it listens."""

    def __init__(self, checkpoint, config, *args: str, token: str | None = None) -> None:
        env = dict(
            os.environ, MUJOCO_GL="egl", PYTHONPATH=os.pathsep.join([str(ROOT), str(CLIENT)])
        )
        env.pop("DEXWM_TOKEN", None)
        if token is not None:
            env["DEXWM_TOKEN"] = token
        cmd = [
            sys.executable,
            str(ROOT / "plan.py"),
            "serve",
            "--checkpoint",
            str(checkpoint),
            "--config",
            str(config),
            *args,
        ]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, args=(self.proc.stdout, True), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, False), daemon=True).start()
        self.url = None

    def _read(self, stream, out: bool) -> None:
        for line in stream:
            (self.lines.put if out else self.stderr.append)(line)

    def wait(self, timeout: float = 300.0) -> str:
        """The server's URL once it listens (raises with its stderr if it exits first)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if line.startswith("dexwm planning server: "):
                self.url = line.split()[3]
                return self.url
        raise RuntimeError("the server did not start:\n" + "".join(self.stderr)[-3000:])

    def exit_code(self, timeout: float = 120.0) -> int:
        return self.proc.wait(timeout)

    def stop(self, kill: bool = False) -> None:
        if self.proc.poll() is None:
            self.proc.kill() if kill else self.proc.terminate()
            self.proc.wait(30)
