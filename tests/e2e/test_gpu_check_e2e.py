"""`make gpu-check` without CUDA is a dry run: every stage runs up to its first CUDA call (the wheels' check, the
versions, collecting tests/unit, the probe's and the server's imports and arguments) and says where it stopped, and
the report is written as on a GPU. CI has no GPU, so this is how CI keeps the check runnable."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from harness import ROOT


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA this would be the real check, minutes long")
def test_the_dry_run_reaches_each_stages_first_cuda_call_and_says_where(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "OUT": str(out), "WORK": str(work), "PY": sys.executable}
    done = subprocess.run(["bash", "bench/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    doc = json.loads((out / "gpu_check.json").read_text())
    meta = doc["meta"]
    assert meta["dry_run"] is True
    stopped = meta["stopped_before_cuda"]
    assert set(stopped) >= {"checkpoint", "tests", "probe", "server"}
    assert "full model on cuda" in stopped["checkpoint"]
    assert "loaded fixture" in stopped["tests"] and "onto cuda" in stopped["probe"]
    assert "--device cuda" in stopped["server"]
    assert doc["setup"]["requirements"] == "every requirement met"
    assert doc["setup"]["image_packages"]  # the interpreter's own list, read before any carried package
    assert all(s["rc"] in (0, 3) for s in doc["stages"].values()), doc["stages"]
    assert len(list(out.iterdir())) <= 8
    summary = (out / "summary.txt").read_text()
    assert "DRY RUN (no CUDA)" in summary and "checkpoint: before initialising the full model on cuda" in summary
    assert "tests collected" in (out / "tests.log").read_text()  # every test module imported
