"""Prometheus metrics at /metrics, correct with several gunicorn workers.

With PROMETHEUS_MULTIPROC_DIR set (api_server.py sets it; gunicorn.conf.py clears it at start and marks dead
workers), every worker writes its samples there and /metrics aggregates all of them, whichever worker answers.
Without it (tests, a plain `flask run`), the process's own registry is served.
"""

from __future__ import annotations

import os

from flask import Blueprint, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as mp

_LATENCY = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

REQUESTS = Counter("higgs_requests_total", "HTTP requests by endpoint and status", ["endpoint", "method", "status"])
QUEUE_WAIT = Histogram("higgs_queue_wait_seconds", "Time waiting for a free model instance", buckets=_LATENCY)
FIRST_AUDIO = Histogram("higgs_time_to_first_audio_seconds", "Request start to first audio", ["endpoint"],
                        buckets=_LATENCY)
GENERATION = Histogram("higgs_generation_seconds", "Whole generation time, queueing included", ["endpoint", "outcome"],
                       buckets=_LATENCY)
FINISHED = Counter("higgs_generations_finished_total", "Generations that ended by themselves, by how: finish_reason "
                   "stop, length or runaway, and runaway_reason (repetition, silence, text_budget; empty otherwise)",
                   ["endpoint", "finish_reason", "runaway_reason"])
AUDIO_SECONDS = Counter("higgs_audio_seconds_total", "Seconds of audio produced", ["endpoint"])
FRAMES_PER_SECOND = Histogram("higgs_frames_per_second", "Audio frames generated per second of model time",
                              buckets=(5, 10, 25, 50, 100, 200, 400, 800, 1600, 3200))
BUSY = Gauge("higgs_busy_instances", "Model instances generating now", multiprocess_mode="livesum")
WAITING = Gauge("higgs_waiting_requests", "Requests waiting for a model instance", multiprocess_mode="livesum")
INSTANCES = Gauge("higgs_instances", "Model instances loaded", multiprocess_mode="livesum")
REALTIME_SESSIONS = Gauge("higgs_realtime_sessions", "Realtime WebSocket sessions open", multiprocess_mode="livesum")
REALTIME_FIRST_AUDIO = Histogram("higgs_realtime_first_audio_seconds",
                                 "From the message that completed a sentence to its first audio", buckets=_LATENCY)
REALTIME_CANCELS = Counter("higgs_realtime_cancels_total", "Realtime utterances cancelled (input.cancel)")


def observe_generation(endpoint: str, outcome: str, stats, elapsed: float, sample_rate: int) -> None:
    GENERATION.labels(endpoint, outcome).observe(elapsed)
    if outcome == "ok" and stats.finish_reason:
        FINISHED.labels(endpoint, stats.finish_reason, stats.runaway_reason or "").inc()
    QUEUE_WAIT.observe(stats.queue_wait_s)
    if stats.first_audio_s is not None:
        FIRST_AUDIO.labels(endpoint).observe(stats.first_audio_s)
    AUDIO_SECONDS.labels(endpoint).inc(stats.samples / sample_rate)
    model_time = elapsed - stats.queue_wait_s
    if stats.frames and model_time > 0:
        FRAMES_PER_SECOND.observe(stats.frames / model_time)


def observe_pool(stats: dict) -> None:
    BUSY.set(stats["busy"])
    WAITING.set(stats["waiting"])
    INSTANCES.set(stats["instances"])


blp = Blueprint("metrics", __name__)


@blp.route("/metrics")
def metrics():
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        mp.MultiProcessCollector(registry)
        payload = generate_latest(registry)
    else:
        payload = generate_latest()
    return Response(payload, mimetype=CONTENT_TYPE_LATEST)
