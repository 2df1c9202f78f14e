"""The memory plan chooses the slots (as many as fit, up to the device kind's ceiling), --max-batch-size caps them,
quantized weights leave room for more, and the README's memory table is the plan's arithmetic for the real model."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_pool.engine.memory import GIB, hub_model_bytes, plan_slots, readme_table
from model_pool.engine.quantize import WeightReport
from model_pool.errors import ModelLoadError

TOKEN = 112 * 1024  # the real model's keys and values of one token, bf16
ROOT = Path(__file__).resolve().parents[2]


def test_the_plan_takes_as_many_slots_as_fit_up_to_the_device_kinds_ceiling():
    h200 = plan_slots("cuda:0", 128 * GIB, TOKEN, 8192)  # an H200 after bf16 weights and the codec
    assert h200.slots == 64 and h200.fit == 143 and h200.requested is None
    assert "--max-batch-size auto: as many as fit, at most 64, 143 fit" in h200.describe()
    assert plan_slots("cuda:0", 30 * GIB, TOKEN, 8192).slots == 31  # fewer fit than the ceiling: all that fit
    assert plan_slots("cuda:0", 128 * GIB, TOKEN, 8192, requested=128).slots == 128  # the flag raises the ceiling
    assert plan_slots("cuda:0", 128 * GIB, TOKEN, 8192, requested=200).slots == 143  # ... to what fits
    assert plan_slots("cuda:0", 128 * GIB, TOKEN, 8192, requested=4).slots == 4  # and lowers it
    assert plan_slots("cpu", 100 * GIB, TOKEN, 8192).slots == 8  # a CPU: at most 8 by itself
    assert plan_slots("mps", None, TOKEN, 8192).slots == 8  # no free-memory reading: the ceiling


def test_quantized_weights_fit_a_12_gb_card_where_bf16_does_not():
    weights, codec, token = hub_model_bytes()
    assert token == TOKEN and weights["none"] == pytest.approx(10.0 * GIB, rel=0.01)
    assert weights["int8"] <= 0.55 * weights["none"] and weights["int4"] <= 0.35 * weights["none"]
    card = 12 * GIB - GIB // 2  # less the CUDA context
    bf16 = WeightReport("none", weights["none"], weights["none"], "bfloat16")
    with pytest.raises(ModelLoadError, match="--quantization int8 or int4"):
        plan_slots("cuda:0", card - weights["none"] - codec, token, 8192, weights=bf16)
    assert plan_slots("cuda:0", card - weights["int8"] - codec, token, 8192).slots == 3
    assert plan_slots("cuda:0", card - weights["int4"] - codec, token, 8192).slots == 6


def test_the_readme_table_is_the_plans_arithmetic():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for row in readme_table().splitlines():
        assert row in readme, f"README's memory table lacks: {row} (python -m model_pool.engine.memory prints it)"


def test_gunicorn_has_a_thread_for_every_slot_the_plan_may_take(monkeypatch):
    """--max-batch-size 0: the master cannot ask the plan (it never touches CUDA), so it counts the ceiling."""
    import runpy

    import app.workers

    def threads(gpus: int, **env) -> int:
        monkeypatch.setattr(app.workers, "count_gpus", lambda timeout=120: gpus)
        for key, value in env.items():
            monkeypatch.setenv(f"HIGGS_{key.upper()}", value)
        return runpy.run_path(str(ROOT / "gunicorn.conf.py"))["threads"]

    sessions_and_spare = 32 + 8
    assert threads(1, device="auto", max_batch_size="0") == 64 + 128 + sessions_and_spare
    assert threads(0, device="cpu", max_batch_size="0") == 8 + 16 + sessions_and_spare
    assert threads(1, device="cuda:0", max_batch_size="16") == 16 + 32 + sessions_and_spare
