"""gunicorn settings, from the same HIGGS_* variables the app reads.

gthread workers: each request (and each open stream) holds a thread, so there must be more threads than model
instances, or health checks and queued requests could not be answered while every instance is busy. The app is not
preloaded: the master never touches CUDA; each worker loads its own pool in the background. With --device auto and
N GPUs there are N workers, worker i owning cuda:i (app/workers.py).
"""

import os
import signal

from app.settings import Settings
from app.workers import count_gpus, layout, wants_every_gpu
from model_pool.defaults import auto_max_slots, default_max_waiting

_s = Settings.from_env()
_layout = layout(_s.device, _s.workers, count_gpus() if wants_every_gpu(_s.device) else 0)

bind = [f"{_s.host}:{_s.port}"] if ":" not in _s.host else [f"[{_s.host}]:{_s.port}"]
workers = _layout.workers
worker_class = "gthread"
# A worker's pool admits its batch slots plus its queue; every admitted request (and open stream) holds a thread, so
# there are always SPARE_THREADS more: health checks, /info, and the immediate 503 of a request beyond the queue.
SPARE_THREADS = 8
# --max-batch-size 0: the memory plan takes as many slots as fit, at most the device kind's ceiling (64 on a GPU).
_kind = "cuda" if _layout.devices or _s.device.strip().lower().startswith("cuda") else "cpu"
_slots = max(1, _s.instances_per_device) * (_s.max_batch_size or auto_max_slots(_kind))
ADMITTED = _slots + (_s.max_queue or default_max_waiting(_slots))
# Every open realtime session holds one more thread (its WebSocket), on top of the pool's admitted requests.
threads = max(_s.threads, ADMITTED + _s.max_sessions + SPARE_THREADS)
preload_app = False
timeout = 120  # gthread heartbeats from its main loop, so long streams are fine
# Idle keep-alive connections wait in the worker's poller (no thread) and are closed after `keepalive` seconds. A
# request's reads and writes are bounded by the app's socket timeout (--client-timeout). Slow headers are not:
# gthread reads them in a thread, so direct exposure is for trusted networks; put nginx in front (deploy/).
graceful_timeout = _s.graceful_timeout  # long enough to finish a stream
keepalive = 5
accesslog = None  # the app writes one line per request with its request id
errorlog = "-"
loglevel = _s.log_level.lower()
forwarded_allow_ips = _s.forwarded_allow_ips


def on_starting(server):
    """Start every run with empty multiprocess metric files (stale ones would be summed into /metrics)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        os.makedirs(directory, exist_ok=True)
        for name in os.listdir(directory):
            if name.endswith(".db"):
                os.remove(os.path.join(directory, name))


def pre_fork(server, worker):
    """Give the new worker the first GPU no live worker owns (the master knows them all; the child inherits it)."""
    if _layout.devices:
        taken = {getattr(w, "higgs_device", None) for w in server.WORKERS.values()}
        worker.higgs_device = _layout.assign(taken)


def post_fork(server, worker):
    device = getattr(worker, "higgs_device", None)
    if device:
        os.environ["HIGGS_DEVICE"] = device  # read by the app, which each worker creates after the fork
        server.log.info("worker %s owns %s", worker.pid, device)


def post_worker_init(worker):
    """A graceful stop (SIGTERM) also tells the service it is draining: realtime sessions then close (1001) once
    they have nothing left to say, instead of holding the worker until their idle timeout (gunicorn waits up to
    graceful_timeout for open connections). Generations in flight still finish."""
    handle_exit = worker.handle_exit

    def on_term(sig, frame):
        runtime = getattr(getattr(worker, "wsgi", None), "extensions", {}).get("higgs")
        if runtime is not None:
            runtime.service.draining.set()
        handle_exit(sig, frame)

    signal.signal(signal.SIGTERM, on_term)


def worker_int(worker):
    """Quick shutdown (SIGINT / SIGQUIT): stop every generation now, each client told, so no slot outlives the worker.
    A graceful stop (SIGTERM) lets streams finish within graceful_timeout instead."""
    runtime = getattr(getattr(worker, "wsgi", None), "extensions", {}).get("higgs")
    if runtime is not None:
        runtime.service.shutdown()


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
