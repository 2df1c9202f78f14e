"""gunicorn's worker layout: one worker per GPU, each owning its device; CPU keeps --workers. GPUs are faked."""

from __future__ import annotations

import logging
import os
import runpy
from pathlib import Path
from types import SimpleNamespace

import app.workers
from app.workers import layout

CONF = Path(__file__).resolve().parents[2] / "gunicorn.conf.py"


def load_conf(monkeypatch, gpus: int, **env) -> dict:
    monkeypatch.setattr(app.workers, "count_gpus", lambda timeout=120: gpus)
    for key, value in env.items():
        monkeypatch.setenv(f"HIGGS_{key.upper()}", value)
    return runpy.run_path(str(CONF))


def spawn(conf, server, pid):
    worker = SimpleNamespace(pid=pid)
    conf["pre_fork"](server, worker)
    server.WORKERS[pid] = worker
    return worker


def test_layout_rules():
    assert layout("auto", 1, 4).devices == ("cuda:0", "cuda:1", "cuda:2", "cuda:3")
    assert layout("cuda", 3, 2).workers == 2
    assert layout("auto", 2, 0) == layout("cpu", 2, 4) == layout("cuda:1", 2, 4)  # --workers copies
    assert layout("cpu", 2, 4).devices == ()


def test_one_worker_per_gpu_and_a_replacement_takes_over_its_gpu(monkeypatch):
    conf = load_conf(monkeypatch, gpus=4, device="auto", workers="1")
    assert conf["workers"] == 4
    server = SimpleNamespace(WORKERS={}, log=logging.getLogger("test"))
    workers = [spawn(conf, server, pid) for pid in range(4)]
    assert [w.higgs_device for w in workers] == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    dead = server.WORKERS.pop(2)
    replacement = spawn(conf, server, 9)
    assert replacement.higgs_device == dead.higgs_device == "cuda:2"
    monkeypatch.setenv("HIGGS_DEVICE", "auto")  # post_fork rewrites it in the child; restored after the test
    conf["post_fork"](server, replacement)
    assert os.environ["HIGGS_DEVICE"] == "cuda:2"


def test_cpu_keeps_workers_and_the_configured_device(monkeypatch):
    conf = load_conf(monkeypatch, gpus=4, device="cpu", workers="2")
    assert conf["workers"] == 2
    server = SimpleNamespace(WORKERS={}, log=logging.getLogger("test"))
    worker = spawn(conf, server, 1)
    assert not hasattr(worker, "higgs_device")
