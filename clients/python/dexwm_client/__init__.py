"""dexwm_client: a torch-free client for dexwm planning servers (`python plan.py serve`).

Depends only on numpy, websockets and msgpack. See `PlanningClient`, and docs/serving.md in the
dexwm repository for the message schema.
"""

from dexwm_client.client import ConnectionLost, PlanningClient, ServerError
from dexwm_client.codec import ProtocolError, packb, unpackb

__all__ = ["ConnectionLost", "PlanningClient", "ProtocolError", "ServerError", "packb", "unpackb"]
__version__ = "0.1.0"
