"""`PlanningClient`: reset / act against a dexwm planning server (`python plan.py serve`).

    from dexwm_client import PlanningClient
    with PlanningClient("ws://127.0.0.1:8000") as client:     # token: DEXWM_TOKEN or token=
        client.metadata["joint_names"]                         # the order joint vectors use
        client.reset(goal_image, intrinsics=K, extrinsics={"position": p, "rotation": R})
        targets = client.act({"image": frame, "joints": q})    # (k, J) joint targets, radians
        client.last["cost"], client.last["timing"]             # the plan's cost and timing

Synchronous: one request in flight per client. A connection that breaks raises `ConnectionLost`;
the server forgets that session, so call `reset` again (it reconnects). An error reply raises
`ServerError` (its `code` and message name the problem) and the session stays usable.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from dexwm_client.codec import packb, unpackb

TOKEN_ENV = "DEXWM_TOKEN"
PROTOCOL = "dexwm-plan/1"


class ServerError(RuntimeError):
    """The server answered a request with an error (`code`: e.g. bad_field, too_large)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


class ConnectionLost(ConnectionError):
    """The connection to the server is gone (server stopped, network); `reset` reconnects."""


class PlanningClient:
    """A planning session on a dexwm server.

    Args:
        url: ws://host:port of `plan.py serve`.
        token: the server's token (default: the DEXWM_TOKEN environment variable, if set); sent
            as `Authorization: Bearer <token>`. Required when the server listens beyond
            127.0.0.1.
        timeout: seconds to wait for a reply (None: as long as the connection lives; a plan on
            a slow machine can take seconds). On a timeout the connection is closed.
        open_timeout: seconds to wait for the connection and the server's metadata.
        connect: connect now (else on the first `reset`).
    """

    def __init__(
        self,
        url: str = "ws://127.0.0.1:8000",
        token: str | None = None,
        timeout: float | None = None,
        open_timeout: float = 10.0,
        connect: bool = True,
    ) -> None:
        self.url, self.timeout, self.open_timeout = url, timeout, open_timeout
        self.token = token if token is not None else os.environ.get(TOKEN_ENV)
        self.metadata: dict = {}
        self.last: dict = {}
        self._conn: ClientConnection | None = None
        if connect:
            self.connect()

    # ---- connection --------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._conn is not None

    def connect(self) -> dict:
        """Open a new session (closing any previous one) -> the server's metadata."""
        self.close()
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        try:
            conn = connect(
                self.url,
                additional_headers=headers,
                open_timeout=self.open_timeout,
                compression=None,
                max_size=None,
                proxy=None,
            )
        except InvalidStatus as e:
            status = e.response.status_code
            body = e.response.body.decode(errors="replace").strip()
            raise ConnectionError(
                f"the server at {self.url} refused the connection: HTTP {status} {body}"
            ) from e
        except (OSError, TimeoutError, InvalidHandshake) as e:
            raise ConnectionError(f"cannot reach a planning server at {self.url}: {e}") from e
        try:
            meta = unpackb(conn.recv(timeout=self.open_timeout))
        except (ConnectionClosed, TimeoutError, ValueError) as e:
            conn.close()
            raise ConnectionError(f"no metadata from {self.url}: {e}") from e
        if not isinstance(meta, dict) or meta.get("type") != "metadata":
            conn.close()
            raise ConnectionError(f"{self.url} did not send planning-server metadata")
        if meta.get("protocol") != PROTOCOL:
            conn.close()
            raise ConnectionError(f"{self.url} speaks {meta.get('protocol')!r}, not {PROTOCOL}")
        self._conn, self.metadata = conn, meta
        return meta

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()

    def __enter__(self) -> PlanningClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- requests ----------------------------------------------------------------------------
    def request(self, message: dict) -> dict:
        """Send one message, return the server's reply (raises ServerError on an error reply)."""
        if self._conn is None:
            raise ConnectionLost(f"not connected to {self.url}: call reset() to start a session")
        payload = packb(message)
        limit = self.metadata.get("limits", {}).get("max_message_bytes")
        if limit and len(payload) > limit:  # the server would drop the connection: refuse here
            raise ValueError(f"message of {len(payload)} bytes exceeds the server's limit {limit}")
        t0 = time.perf_counter()
        try:
            self._conn.send(payload)
            raw = self._conn.recv(timeout=self.timeout)
        except TimeoutError:
            self.close()
            raise TimeoutError(
                f"no reply from {self.url} within {self.timeout} s; disconnected"
            ) from None
        except (ConnectionClosed, OSError) as e:
            self._conn = None
            raise ConnectionLost(
                f"the connection to the planning server at {self.url} was lost ({e}); "
                "call reset() to reconnect and start a new session"
            ) from e
        reply = unpackb(raw)
        if not isinstance(reply, dict):
            raise ServerError("protocol", "the server sent a reply that is not a map")
        reply.setdefault("timing", {})["round_trip_s"] = time.perf_counter() - t0
        if reply.get("type") == "error":
            raise ServerError(str(reply.get("code")), str(reply.get("message")))
        return reply

    def reset(
        self,
        goal_image: np.ndarray,
        intrinsics: np.ndarray | None = None,
        extrinsics: dict | None = None,
        **options: Any,
    ) -> dict:
        """Start an episode toward `goal_image` (uint8 (H, W, 3), the size of later frames);
        reconnects when the connection was lost.

        intrinsics: (3, 3) camera matrix for frames of that size; extrinsics: the camera pose in
        the robot base frame, {"position": (3,), "rotation": (3, 3) columns = the camera's x
        right, y down, z forward axes}. Omitted: the server's camera (metadata["camera"]).
        options: seed (int), task (str), goal_joints (J,): see the protocol docs."""
        if self._conn is None:
            self.connect()
        msg: dict[str, Any] = {"type": "reset", "goal_image": goal_image, **options}
        if intrinsics is not None:
            msg["intrinsics"] = np.asarray(intrinsics, np.float64)
        if extrinsics is not None:
            msg["extrinsics"] = {k: np.asarray(v, np.float64) for k, v in extrinsics.items()}
        self.last = self.request(msg)
        return self.last

    def act(self, obs: dict) -> np.ndarray:
        """obs {"image": uint8 (H, W, 3), "joints": (J,) current joint targets, radians} ->
        joint targets of the next k control steps (k, J); the reply is kept in `last`."""
        joints = np.asarray(obs["joints"], dtype=np.float64)
        self.last = self.request({"type": "act", "image": obs["image"], "joints": joints})
        return self.last["targets"]
