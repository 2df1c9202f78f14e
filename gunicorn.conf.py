"""gunicorn settings, from the same HIGGS_* variables the app reads.

gthread workers: each request (and each open stream) holds a thread, so there must be more threads than model
instances, or health checks and queued requests could not be answered while every instance is busy. The app is not
preloaded: the master never touches CUDA; each worker loads its own pool in the background.
"""

import os

from app.settings import Settings

_s = Settings.from_env()

bind = [f"{_s.host}:{_s.port}"] if ":" not in _s.host else [f"[{_s.host}]:{_s.port}"]
workers = _s.workers
worker_class = "gthread"
_slots = max(1, _s.instances_per_device) * max(1, _s.max_batch_size)
threads = _s.threads or max(8, 2 * _slots + 4)  # running + queued requests, plus room for health checks
preload_app = False
timeout = 120  # gthread heartbeats from its main loop, so long streams are fine
graceful_timeout = int(os.environ.get("HIGGS_GRACEFUL_TIMEOUT", "300"))  # long enough to finish a stream
keepalive = 5
accesslog = None  # the app writes one line per request with its request id
errorlog = "-"
loglevel = _s.log_level.lower()
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")


def on_starting(server):
    """Start every run with empty multiprocess metric files (stale ones would be summed into /metrics)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        os.makedirs(directory, exist_ok=True)
        for name in os.listdir(directory):
            if name.endswith(".db"):
                os.remove(os.path.join(directory, name))


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
