"""Liveness and readiness for load balancers and systemd; never behind the API key."""

from __future__ import annotations

from model_pool.errors import NotReady

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
    service = runtime().service
    try:
        service.pool()
    except NotReady as exc:  # loading (Retry-After) or failed (none: no retry will help)
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else {}
        return {"status": service.status()["state"], "reason": exc.message}, 503, headers
    return {"status": "ready", "pool": service.status()["pool"]}
