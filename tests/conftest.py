"""Shared fixtures: one tiny random-weight checkpoint per test session, built offline."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import pytest  # noqa: E402

from helpers import make_app, write_voice  # noqa: E402


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from model_pool import tiny

    return tiny.build(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def loaded(tiny_checkpoint):
    """The tiny model on the CPU, or on HIGGS_TEST_DEVICE (make gpu-check runs the engine tests on cuda). With
    HIGGS_TEST_DTYPE=bfloat16 the model runs in bf16 where it is (a GPU's logits, rehearsed on the CPU: the tests
    then compare codes as they do on a GPU, tests/unit/agreement.py)."""
    import torch

    from model_pool.engine.loader import load

    device = torch.device(os.environ.get("HIGGS_TEST_DEVICE", "cpu"))
    loaded = load(str(tiny_checkpoint / "model"), str(tiny_checkpoint / "audio_tokenizer"), device)
    if os.environ.get("HIGGS_TEST_DTYPE"):
        loaded.model.to(getattr(torch, os.environ["HIGGS_TEST_DTYPE"]))
    return loaded


@pytest.fixture(scope="session")
def engine(loaded):
    from model_pool.engine import HiggsEngine
    from model_pool.engine.voice_cache import VoiceCache

    return HiggsEngine(loaded, VoiceCache())


@pytest.fixture(scope="session")
def compiled_engine(loaded):
    """The compiled step (--compile on), 4 slots, a 4096-token context: compiled once for the whole session."""
    import torch
    from torch._dynamo.utils import counters

    from model_pool.engine import HiggsEngine
    from model_pool.engine.voice_cache import VoiceCache

    torch._dynamo.reset()
    before = counters["stats"]["unique_graphs"]
    engine = HiggsEngine(loaded, VoiceCache(), name="compiled", max_batch_size=4, context_tokens=4096, compile=True)
    engine.graphs_at_warm_up = counters["stats"]["unique_graphs"] - before
    return engine


@pytest.fixture
def client(tmp_path, engine):
    """The Flask app's test client, on the session's engine."""
    return make_app(tmp_path, engine).test_client()


@pytest.fixture
def voice_dir(tmp_path) -> Path:
    d = tmp_path / "voices"
    d.mkdir()
    write_voice(d, "belinda", transcript="I am Belinda.", seed=1)
    write_voice(d, "en_man", transcript="I am a man.", seed=2)
    write_voice(d, "mute", transcript=None, seed=3)
    (d / "profile.yaml").write_text("profiles:\n  narrator: A calm, low male voice.\n", encoding="utf-8")
    return d


@pytest.fixture
def scene_dir(tmp_path) -> Path:
    d = tmp_path / "scenes"
    d.mkdir()
    (d / "quiet_indoor.txt").write_text("Audio is recorded from a quiet room.\n", encoding="utf-8")
    return d


# Test kinds (`make test-fast` leaves out e2e) come from where a test lives: tests/unit, tests/api or tests/e2e.
# A test file anywhere else has no kind, and collection stops with an error, so nothing runs unclassified.
KINDS = ("unit", "api", "e2e")


def pytest_collection_modifyitems(items):
    for item in items:
        kind = Path(str(item.path)).parent.name
        if kind not in KINDS:
            raise pytest.UsageError(f"{item.path}: test files live in tests/unit, tests/api or tests/e2e")
        item.add_marker(kind)
