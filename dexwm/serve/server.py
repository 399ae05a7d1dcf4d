"""The planning server: one world model and planner, many client sessions, over websockets.

    python plan.py serve --checkpoint CKPT --config configs/plan/default.yaml [--port 8000]

On connect the server sends its metadata (model, encoder input size, frame size and camera it
assumes, joint names and order, control rate, execute-k, limits); then each binary message (a
msgpack map, `dexwm_client.codec`) gets one reply: `reset` -> ready, `act` -> joint targets
(k, J) + the plan's cost + timing, anything wrong -> an error naming the problem, the session
intact. Messages larger than `max_message_mb` are refused by the websocket layer itself (the
connection closes with code 1009; the client checks the limit before sending).

Concurrency: every connection is its own session (own thread, own goal, own warm start); plans
run one at a time, in arrival order: with c clients each waits for up to c - 1 other plans
(`timing.queue_s`). A client that leaves mid-plan only loses its reply.

Security: binds 127.0.0.1 unless told otherwise; any other interface needs a token (the
DEXWM_TOKEN environment variable, >= 16 characters) that every client sends as
`Authorization: Bearer <token>`, compared in constant time before the websocket opens.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import threading
import time
from collections.abc import Callable
from http import HTTPStatus

import numpy as np

from dexwm.control.policy import MPCPolicy, Policy
from dexwm.control.remote import client_module
from dexwm.serve.session import BadRequest, FifoLock, Session

log = logging.getLogger("dexwm.serve")
TOKEN_ENV = "DEXWM_TOKEN"
MIN_TOKEN_CHARS = 16


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name, or "" (every interface)
        return False


def check_exposure(host: str, token: str | None) -> None:
    """Refuse to listen beyond this machine without a token, or with a short one."""
    if not is_loopback(host) and not token:
        raise ValueError(
            f"listening on {host!r} makes the planner reachable from other hosts: set a token in "
            f"{TOKEN_ENV} (e.g. python -c 'import secrets; print(secrets.token_urlsafe())')"
        )
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"the token must have at least {MIN_TOKEN_CHARS} characters")


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


class PlanServer:
    """Serves `policy` (set up, e.g. an `MPCPolicy` with its world model loaded; never run itself:
    every session plans with its own copy) for `rig`'s robot and camera (a `dexwm.sim.Rig`: model,
    info, camera, joint limits; never stepped). The other arguments: see `serve`; `info` goes
    into the metadata's "model" entry."""

    def __init__(
        self,
        policy: Policy,
        rig,
        host: str,
        port: int,
        token: str | None,
        max_sessions: int,
        max_image_side: int,
        max_message_bytes: int,
        info: dict | None = None,
    ) -> None:
        check_exposure(host, token)
        self.policy, self.rig, self.host, self.port = policy, rig, host, port
        self._token = None if token is None else _digest(f"Bearer {token}")
        self.max_sessions, self.max_image_side = max_sessions, max_image_side
        self.max_message_bytes = max_message_bytes
        self.codec = client_module().codec
        self.lock = FifoLock()  # one plan at a time, in arrival order
        self._count = threading.Lock()
        self.sessions = 0
        self.metadata = self._metadata(info or {})
        self._server = None

    def _metadata(self, info: dict) -> dict:
        from dexwm.sim.rig import CONTROL_HZ

        p, rig = self.policy, self.rig
        planner = getattr(p, "planner", None)
        wm = getattr(p, "wm", None)
        return {
            "type": "metadata",
            "protocol": "dexwm-plan/1",
            "policy": {
                "name": p.name,
                "class": type(p).__name__,
                "planner": repr(planner),
                "horizon": getattr(p, "horizon", None),
                "execute": getattr(p, "execute", 1),
            },
            "execute": getattr(p, "execute", 1),
            "model": {
                **info,
                "encoder": None if wm is None else wm.encoder_spec.name,
                "encoder_input_size": None if wm is None else list(wm.encoder_spec.input_size),
            },
            "image_size": [rig.size, rig.size],
            "embodiment": rig.embodiment,
            "joint_names": list(rig.info.joints),
            "n_arm": int(rig.info.n_arm),
            "joint_limits": np.asarray(rig.joint_limits, dtype=np.float64),
            "control_hz": CONTROL_HZ,
            "camera": {
                "image_size": [rig.size, rig.size],
                "intrinsics": rig.camera.K(rig.size),
                "extrinsics": {"position": rig.camera.pos, "rotation": rig.camera.R},
                "frame": "pose in the robot base frame (x forward, z up); camera axes: OpenCV",
            },
            "limits": {
                "max_image_side": self.max_image_side,
                "max_message_bytes": self.max_message_bytes,
                "max_sessions": self.max_sessions,
            },
            "concurrency": "sessions are independent; plans run one at a time (timing.queue_s)",
            "auth": self._token is not None,
        }

    # ---- connections -------------------------------------------------------------------------
    def _check_request(self, connection, request):
        """Before the websocket opens: the token (constant-time), then the session limit."""
        if self._token is not None:
            got = request.headers.get("Authorization", "")
            if not hmac.compare_digest(_digest(got), self._token):
                log.warning("refused %s: missing or wrong token", connection.remote_address)
                return connection.respond(HTTPStatus.UNAUTHORIZED, "a valid token is required\n")
        if self.sessions >= self.max_sessions:
            return connection.respond(
                HTTPStatus.SERVICE_UNAVAILABLE, f"all {self.max_sessions} sessions are in use\n"
            )
        return None

    def handle(self, conn) -> None:
        """One session: metadata, then one reply per message until the client leaves."""
        from websockets.exceptions import ConnectionClosed

        with self._count:
            if self.sessions >= self.max_sessions:
                conn.close(1013, "all sessions are in use")
                return
            self.sessions += 1
        peer = conn.remote_address
        log.info("session opened: %s (%d open)", peer, self.sessions)
        try:
            session = Session(self.policy, self.rig, self.lock, self.max_image_side)
            conn.send(self.codec.packb(self.metadata))
            while True:
                raw = conn.recv()
                conn.send(self.codec.packb(self.reply(session, raw)))
        except ConnectionClosed:
            pass  # the client left (maybe mid-plan: its reply is dropped, nothing else changes)
        finally:
            with self._count:
                self.sessions -= 1
            log.info("session closed: %s", peer)

    def reply(self, session: Session, raw) -> dict:
        """The reply to one raw message; never raises."""
        t0 = time.perf_counter()
        try:
            try:
                msg = self.codec.unpackb(raw)
            except self.codec.ProtocolError as e:
                raise BadRequest("malformed", str(e)) from None
            if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
                raise BadRequest("malformed", "a message is a map with a string 'type'")
            kind = msg["type"]
            if kind == "reset":
                out = session.reset(msg)
            elif kind == "act":
                out = session.act(msg)
            elif kind == "metadata":
                out = dict(self.metadata, sessions=self.sessions)
            else:
                raise BadRequest("unknown_type", f"unknown type {kind!r}: reset, act or metadata")
        except BadRequest as e:
            out = {"type": "error", "code": e.code, "message": str(e)}
        except Exception as e:  # a bug or a planner failure: answer, log, keep serving
            log.exception("request failed")
            out = {"type": "error", "code": "internal", "message": f"{type(e).__name__}: {e}"}
        out.setdefault("timing", {})["server_s"] = time.perf_counter() - t0
        return out

    def run(self, ready: Callable[[str], None] | None = None) -> None:
        """Listen until interrupted; `ready(url)` is called once the socket is bound."""
        from websockets.sync.server import serve

        with serve(
            self.handle,
            self.host,
            self.port,
            process_request=self._check_request,
            max_size=self.max_message_bytes,
            max_queue=4,  # messages buffered per connection before reading pauses (memory bound)
            compression=None,
        ) as server:
            self._server = server
            port = server.socket.getsockname()[1]
            url = f"ws://{self.host}:{port}"
            (ready or (lambda u: None))(url)
            server.serve_forever()

    def shutdown(self) -> None:
        if self._server is not None:
            self._server.shutdown()


def served_policy(policies: list[Policy], config: str) -> MPCPolicy:
    """The first MPC policy of a plan config, unwrapped from a wrapper policy (one with an inner
    `policy`, e.g. staged goals: the stages are then the client's business); it must plan
    through the learned model (a simulator-as-model policy needs the sim's state)."""
    for p in policies:
        inner = p if isinstance(p, MPCPolicy) else getattr(p, "policy", None)
        if isinstance(inner, MPCPolicy):
            if getattr(inner, "model", "learned") != "learned":
                raise ValueError(f"{config}: {inner.name} plans with the simulator, not servable")
            return inner
    raise ValueError(f"{config} has no MPCPolicy to serve")


def warm_up(server: PlanServer) -> None:
    """One reset + act on a blank frame (builds the encoder, first-call costs) before serving."""
    rig = server.rig
    session = Session(server.policy, rig, server.lock, server.max_image_side)
    blank = np.zeros((rig.size, rig.size, 3), np.uint8)
    home = np.asarray(rig.home, np.float64)
    session.reset({"type": "reset", "goal_image": blank, "goal_joints": home})
    session.act({"type": "act", "image": blank, "joints": home})


def serve(
    checkpoint: str,
    config: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_sessions: int = 8,
    max_image_side: int = 1024,
    max_message_mb: float = 16.0,
    threads: int = 0,
) -> None:
    """Serve the first MPC policy of a plan config (configs/plan/*.yaml) with a world model.

    Args:
        checkpoint: the world model.
        config: a plan config; its first MPCPolicy is served, its `size` is the frame size.
        host: interface to listen on (127.0.0.1: this machine only; any other needs DEXWM_TOKEN).
        port: TCP port (0: any free port; the URL is printed).
        max_sessions: clients connected at once.
        max_image_side: largest frame side accepted (px); larger frames get a `too_large` error.
        max_message_mb: largest message (MiB); larger ones close the connection (code 1009).
        threads: torch intra-op threads (0: torch's default).
    """
    token = os.environ.get(TOKEN_ENV) or None
    check_exposure(host, token)  # before anything is loaded

    import timm  # noqa: F401  (before MuJoCo: see dexwm.control.episodes._init_worker)
    import torch

    from dexwm.config import load
    from dexwm.control.episodes import evaluate
    from dexwm.sim import Rig

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if threads:
        torch.set_num_threads(threads)
    cfg = load(evaluate, config)
    policy = served_policy(cfg["policies"] or [], config)
    policy.setup(checkpoint)
    rig = Rig("allegro", size=cfg["size"])
    server = PlanServer(
        policy,
        rig,
        host,
        port,
        token,
        max_sessions,
        max_image_side,
        int(max_message_mb * (1 << 20)),
        info={"checkpoint": os.path.basename(checkpoint), "config": config},
    )
    warm_up(server)
    server.run(
        ready=lambda url: print(f"dexwm planning server: {url} (policy {policy.name})", flush=True)
    )
