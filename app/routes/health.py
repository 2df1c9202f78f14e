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
    rt = runtime()
    pool = rt.loader.peek()
    if pool is not None and pool.size > 0:
        return {"status": "ready", "pool": pool.stats()}
    reason = rt.loader.error or f"model {rt.loader.state}"
    return {"status": rt.loader.state, "reason": reason}, 503, {"Retry-After": "60" if rt.loader.error else "10"}
