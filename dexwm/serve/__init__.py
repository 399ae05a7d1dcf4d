"""Planning as a service: a websocket server (msgpack-encoded numpy messages, the policy-server
convention of robot-learning stacks) that plans for robots the library does not simulate, one
session per client. The torch-free client is in `clients/python` (package `dexwm_client`); the
message schema in docs/serving.md. Nothing else in the library imports this package.

    python plan.py serve --checkpoint CKPT --config configs/plan/default.yaml [--port 8000]
"""

from dexwm.serve.server import PlanServer, serve
from dexwm.serve.session import BadRequest, Session

__all__ = ["BadRequest", "PlanServer", "Session", "serve"]
