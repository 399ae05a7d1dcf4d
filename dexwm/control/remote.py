"""`RemotePolicy`: a policy whose planning happens on a planning server (`plan.py serve`),
reached through the torch-free client in `clients/python` (package `dexwm_client`). The
evaluation harness runs it like any other policy, so the sim rig can be driven through the same
sockets and messages a real robot uses:

    python plan.py eval --config configs/plan/default.yaml --server ws://127.0.0.1:8000

The sim episode's index, task and goal joints travel with `reset` (seed, task, goal_joints), so a
server started with the same checkpoint and plan config returns the actions the in-process policy
would (tests/test_serve.py checks it over real sockets).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

from dexwm.control.policy import Policy

CLIENT_SOURCE = Path(__file__).resolve().parents[2] / "clients" / "python"


def client_module() -> ModuleType:
    """The `dexwm_client` package: installed with dexwm (`pip install -e .`, setup.py maps it)
    or on its own (`pip install clients/python`); in a checkout where neither was run, it is
    taken from clients/python."""
    try:
        return importlib.import_module("dexwm_client")
    except ImportError:
        if not (CLIENT_SOURCE / "dexwm_client").is_dir():
            raise ImportError(
                "the dexwm planning client is not installed: pip install clients/python"
            ) from None
        sys.path.append(str(CLIENT_SOURCE))
        return importlib.import_module("dexwm_client")


class RemotePolicy(Policy):
    """Plans through the planning server at `url` (ws://host:port).

    Args:
        url: the server (`plan.py serve`).
        name: label in the results table.
        calibration: send the rig's own camera intrinsics and extrinsics with `reset`, as a real
            robot's client does (else the server assumes its sim camera; both are the same
            camera here, so the plans match).
        timeout: seconds to wait for a reply (None: as long as the connection lives).
        token: the server's token (default: the DEXWM_TOKEN environment variable).
    """

    def __init__(
        self,
        url: str,
        name: str = "server",
        calibration: bool = False,
        timeout: float | None = None,
        token: str | None = None,
    ) -> None:
        self.url, self.name, self.calibration = url, name, calibration
        self.timeout, self.token = timeout, token
        self.client = None

    def __getstate__(self) -> dict:  # a connection does not travel to worker processes
        return dict(self.__dict__, client=None)

    def setup(self, checkpoint: str | None) -> None:
        """Connect (the checkpoint is the server's business)."""
        if self.client is None:
            self.client = client_module().PlanningClient(
                self.url, token=self.token, timeout=self.timeout
            )

    def reset(self, rig, goal_image: np.ndarray, obs: dict) -> None:
        super().reset(rig, goal_image, obs)
        self.setup(None)
        options = {}
        if rig.episode is not None:  # the in-process planner's seed, task and privileged goal
            ep = rig.episode
            options.update(seed=int(ep.index), task=ep.task, goal_joints=ep.goal_joints)
        if self.calibration:
            options.update(
                intrinsics=rig.camera.K(goal_image.shape[:2]),
                extrinsics={"position": rig.camera.pos, "rotation": rig.camera.R},
            )
        self.client.reset(goal_image, **options)

    def act(self, obs: dict) -> np.ndarray:
        targets = self.client.act({"image": obs["image"], "joints": obs["commanded"]})
        last = self.client.last
        self.stats["calls"] += 1
        self.stats["evaluations"] += int(last.get("evaluations", 0))
        self.stats["iterations"] += int(last.get("iterations", 0))
        return np.asarray(targets, dtype=np.float64)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
