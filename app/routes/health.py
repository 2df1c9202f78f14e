"""Liveness and readiness for load balancers and systemd; never behind the API key."""

from __future__ import annotations

from ..runtime import runtime
from . import Blueprint

blp = Blueprint("health", __name__, description="Health checks")


@blp.route("/healthz", methods=["GET"])
def healthz():
    """The process is alive and answering."""
    return {"status": "ok"}


@blp.route("/readyz", methods=["GET"])
def readyz():
    """200 once the models are loaded and the pool has instances; 503 with the reason otherwise."""
    status = runtime().service.status()
    if status["pool"] is not None:
        return {"status": "ready", "pool": status["pool"]}
    reason = status["load_error"] or f"model {status['state']}"
    return {"status": status["state"], "reason": reason}, 503, {"Retry-After": "60" if status["load_error"] else "10"}
