"""One request never harms another: a fault while one row joins, is sampled or has its audio decoded fails that
row alone; the rows beside it produce exactly what they produce alone. For the eager and the compiled step."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from helpers import frames, msgs, run
from model_pool.pool import ModelPool
from model_pool.pool_loader import PoolLoader
from model_pool.prompt.library import SceneLibrary, VoiceLibrary
from model_pool.request import GenerationRequest, SamplingParams
from model_pool.service import TTSService

VICTIM = "The victim's text, of a length nobody else has."
SURVIVORS = [("Hello world.", SamplingParams(temperature=0, max_new_tokens=60)),
             ("Numbers 1 2 3.", SamplingParams(seed=21, max_new_tokens=70))]


class Injected(RuntimeError):
    pass


@pytest.fixture(params=["eager", "compiled"])
def engine_kind(request, loaded, compiled_engine):
    if request.param == "compiled":
        return compiled_engine
    from model_pool.engine import HiggsEngine
    from model_pool.engine.voice_cache import VoiceCache

    return HiggsEngine(loaded, VoiceCache(), name="isolation", max_batch_size=4, context_tokens=1024)


def is_victim(row) -> bool:
    return row is not None and getattr(row.prompt, "victim", False)


def inject(stage: str, runner):
    """Make the victim's row fail at `stage`, the way a real fault there would, through the runner's stage hook."""

    def hook(at: str, row):
        if not is_victim(row):
            return
        if stage == "non_finite" and at == "logits" and row.steps == 5:
            runner.logits[row.slot] = float("nan")  # the forward produced garbage for this row alone
        elif at == stage and (stage in ("prefill", "join") or row.steps == 5):
            raise Injected(stage)

    runner.stage_hook = hook


@pytest.fixture
def hooked(engine_kind):
    yield engine_kind
    engine_kind.runner.stage_hook = None


@pytest.mark.parametrize("stage", ["prefill", "join", "noise", "sample", "non_finite"])
def test_a_fault_fails_its_row_alone(hooked, stage):
    engine = hooked
    alone = [run(engine, text, params) for text, params in SURVIVORS]
    inject(stage, engine.runner)
    results, errors = {}, {}
    barrier = threading.Barrier(3)

    def work(name, text, params):
        prompt = engine.encode_prompt(msgs(text))
        prompt.victim = name == "victim"  # the injected faults pick this row out
        barrier.wait()
        try:
            results[name] = frames(engine.generate(prompt, params))
        except Exception as exc:  # noqa: BLE001 - the victim's error is the point
            errors[name] = exc

    jobs = [("victim", VICTIM, SamplingParams(seed=5, max_new_tokens=200))]
    jobs += [(f"s{i}", text, params) for i, (text, params) in enumerate(SURVIVORS)]
    threads = [threading.Thread(target=work, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert set(errors) == {"victim"}, errors
    if stage == "non_finite":
        assert "invalid scores" in str(errors["victim"])
    else:
        assert isinstance(errors["victim"], Injected)
    for i, expected in enumerate(alone):
        assert torch.equal(results[f"s{i}"], expected), f"survivor {i} changed"
    engine.runner.stage_hook = None
    assert run(engine, VICTIM, SamplingParams(temperature=0, max_new_tokens=20)).shape == (12, 8)  # slot reusable


def test_a_decoding_fault_fails_its_request_alone(engine, voice_dir, scene_dir, monkeypatch):
    service = TTSService(PoolLoader.of(ModelPool([engine])), VoiceLibrary(voice_dir), SceneLibrary(scene_dir))
    job = service.prepare(GenerationRequest(text="Survivor speaks.", scene_prompt="",
                                            sampling=SamplingParams(temperature=0, max_new_tokens=80)))
    expected = service.generate(job)
    decode = engine.codec.decode

    def faulty(frames):  # decoding runs in the victim's generation thread, named after its request id
        if threading.current_thread().name == "generation-victim":
            raise Injected("decode")
        return decode(frames)

    monkeypatch.setattr(engine.codec, "decode", faulty)
    results = {}

    def work(name, text):
        j = service.prepare(GenerationRequest(text=text, scene_prompt="",
                                              sampling=SamplingParams(temperature=0, max_new_tokens=80)), name)
        try:
            results[name] = service.generate(j)
        except Injected as exc:
            results[name] = exc

    threads = [threading.Thread(target=work, args=("victim", "Victim speaks."), name="victim"),
               threading.Thread(target=work, args=("survivor", "Survivor speaks."), name="survivor")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert isinstance(results["victim"], Injected)
    assert np.array_equal(results["survivor"], expected)


class SyncCounter(TorchDispatchMode):
    """Counts the operations that make the host wait for the device (on a GPU): scalar reads and nonzero."""

    SYNCING = ("_local_scalar_dense", "nonzero", "item", "equal", "is_nonzero")

    def __init__(self):
        super().__init__()
        self.syncs: list[str] = []
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        if any(name in str(func) for name in self.SYNCING):
            self.syncs.append(str(func))
        return func(*args, **(kwargs or {}))


def test_one_host_transfer_per_step_whatever_the_rows(engine_kind, monkeypatch):
    """Each decode step (sampling and forward in one call) copies its report to the host exactly once, right after
    it is launched, and nothing in the loop makes the host wait for the device (the dispatch mode sees every op the
    loop runs, the prefill included)."""
    runner = engine_kind.runner
    counter = SyncCounter()
    model_runner = runner.model_runner
    original_iterate, original_start, original_step = runner._iterate, runner.transfer.start, model_runner._step
    order: list[str] = []

    def iterate():
        with counter:
            original_iterate()

    def start(report):
        order.append("transfer")
        return original_start(report)

    def step(*args):
        order.append("forward")
        return original_step(*args)

    monkeypatch.setattr(runner, "_iterate", iterate)
    monkeypatch.setattr(runner.transfer, "start", start)
    monkeypatch.setattr(model_runner, "_step", step)
    barrier = threading.Barrier(3)
    jobs = [(f"Row number {i} says hello.", SamplingParams(seed=i, max_new_tokens=40 + 10 * i)) for i in range(3)]

    def work(text, params):
        barrier.wait()
        run(engine_kind, text, params)

    threads = [threading.Thread(target=work, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert order.count("forward") >= 60  # at least the longest row's steps
    assert order == ["forward", "transfer"] * (len(order) // 2)  # one transfer after each step, no other
    assert counter.ops > 1000 and counter.syncs == []  # the mode saw the loop's work, and no sync in it


def test_chunked_prefill_gives_the_whole_prompts_codes(loaded):
    from model_pool.engine import HiggsEngine
    from model_pool.engine.voice_cache import VoiceCache

    whole = HiggsEngine(loaded, VoiceCache(), name="whole", max_batch_size=2, context_tokens=1024, prefill_chunk=None)
    chunked = HiggsEngine(loaded, VoiceCache(), name="chunked", max_batch_size=2, context_tokens=1024,
                          prefill_chunk=7)
    text = "A prompt long enough to take several prefill chunks of seven tokens each, with commas, and more."
    prompt = chunked.encode_prompt(msgs(text))
    assert prompt.input_ids.shape[0] > 30
    params = SamplingParams(temperature=0, max_new_tokens=40)
    expected = frames(whole.generate(whole.encode_prompt(msgs(text)), params))
    pieces = []

    def spy(stage, row):  # the hook runs before each piece; the piece's size is what the row advanced by
        if stage == "prefill" and row.prompt is prompt:
            pieces.append(row.prefilled)

    chunked.runner.stage_hook = spy
    # Chunks apply only while other rows run: keep one running so the second prompt is prefilled 7 at a time.
    running = threading.Event()
    background = threading.Thread(target=run, args=(chunked, "Background.", SamplingParams(temperature=0,
                                                                                        max_new_tokens=300)),
                                  kwargs={"on_step": lambda step: running.set()})
    background.start()
    assert running.wait(60)
    try:
        assert torch.equal(expected, frames(chunked.generate(prompt, params)))
    finally:
        background.join(120)
    sizes = [b - a for a, b in zip(pieces, [*pieces[1:], prompt.input_ids.shape[0]])]
    assert len(sizes) >= 4 and max(sizes) <= 7  # it really was prefilled in pieces
