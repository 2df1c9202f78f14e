"""One handle per generation: however a request ends, its pool place is freed once and one observation is recorded.

Every exit path runs on the real service and engine (the tiny checkpoint): completion, an error, the client going
away, a stalled reader, abort(request_id), the server stopping, and a body closed before it was iterated. A second
release is a LifecycleError, not a silent no-op.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from model_pool.errors import NotReady, PoolBusy
from model_pool.lifecycle import Generation, LifecycleError, Watch, collect
from model_pool.pool import ModelPool
from model_pool.pool_loader import PoolLoader
from model_pool.prompt.library import SceneLibrary, VoiceLibrary
from model_pool.request import GenerationRequest, SamplingParams
from model_pool.service import TTSService


class Observations:
    def __init__(self):
        self.seen: list[tuple[str, float]] = []

    def __call__(self, outcome, stats, elapsed):
        self.seen.append((outcome, stats.samples))


@pytest.fixture
def service(engine, voice_dir, scene_dir):
    pool = ModelPool([engine])
    return TTSService(PoolLoader.of(pool), VoiceLibrary(voice_dir), SceneLibrary(scene_dir), max_new_tokens=400)


def job(service, request_id="r1", max_new_tokens=40, **sampling):
    request = GenerationRequest(text="Hello there.", scene_prompt="",
                                sampling=SamplingParams(temperature=0, max_new_tokens=max_new_tokens, **sampling))
    return service.prepare(request, request_id)


def ended(service, observed: Observations, outcome: str) -> None:
    """The one assertion every exit path must pass."""
    pool = service.pool()
    assert [o for o, _ in observed.seen] == [outcome]
    assert pool.stats()["admitted"] == 0 and pool.stats()["requests"] == 0 and pool.leaks == 0
    assert service.live() == []


def test_completion(service):
    observed = Observations()
    handle = service.start(job(service), observed)
    assert service.pool().stats()["admitted"] == 1 and service.live() == [handle]
    kinds = [e.kind for e in handle.events()]
    assert kinds[-1] == "done" and "audio" in kinds
    ended(service, observed, "ok")
    assert observed.seen[0][1] == 32 * 960  # the observation carries the stats: 40 steps -> 32 frames


def test_an_error_in_the_generation(service, monkeypatch):
    observed = Observations()
    engine = service.pool().engines[0]

    def broken(frames):
        raise RuntimeError("codec broke")

    monkeypatch.setattr(engine.codec, "decode", broken)
    handle = service.start(job(service), observed)
    events = list(handle.events())
    assert events[-1].kind == "error" and "codec broke" in str(events[-1].error)
    ended(service, observed, "error")


def test_the_client_going_away_stops_the_generation(service):
    observed = Observations()
    gone = threading.Event()
    handle = service.start(job(service, max_new_tokens=400), observed)
    started = time.monotonic()
    for event in handle.events(Watch(ping_interval=5.0, client_gone=gone.is_set, tick=0.01)):
        if event.kind == "audio":
            gone.set()  # the client hangs up after the first audio
    assert time.monotonic() - started < 10  # 400 steps would take far longer than the few after the hang-up
    ended(service, observed, "cancelled")


def test_a_stalled_reader_is_cut_off_and_logged(service, caplog):
    observed = Observations()
    handle = service.start(job(service, max_new_tokens=400), observed)
    events = handle.events(Watch(stall_timeout=0.05))
    assert next(events).kind == "audio"
    time.sleep(0.1)  # the consumer (gunicorn's write) is stuck longer than the client timeout: the point here
    events.close()  # the socket timeout closes the body
    ended(service, observed, "stalled")
    assert any("stopped reading for 0.05s" in r.getMessage() for r in caplog.records)


def test_abort_by_request_id(service):
    observed = Observations()
    handle = service.start(job(service, request_id="abc", max_new_tokens=400), observed)
    kinds = []
    for event in handle.events():
        kinds.append(event.kind)
        if event.kind == "audio" and not service.abort("abc"):
            raise AssertionError("abort found no live generation")
    assert "done" not in kinds and "error" not in kinds
    assert service.abort("abc") is False  # ended: nothing left to abort
    ended(service, observed, "cancelled")


def test_the_server_stopping_tells_each_consumer(service):
    observed = Observations()
    handle = service.start(job(service, max_new_tokens=400), observed)
    first_audio, received = threading.Event(), []

    def consumer():  # gunicorn's thread, streaming to its client
        for event in handle.events():
            received.append(event)
            first_audio.set()

    thread = threading.Thread(target=consumer)
    thread.start()
    assert first_audio.wait(60)
    assert service.shutdown(wait=10) == []  # returns once every consumer has ended its handle
    thread.join(10)
    assert received[-1].kind == "error" and isinstance(received[-1].error, NotReady)
    ended(service, observed, "shutdown")
    with pytest.raises(NotReady):  # nothing more is admitted
        service.start(job(service))


def test_a_body_closed_before_it_was_iterated(service):
    observed = Observations()
    handle = service.start(job(service), observed)
    handle.close()  # what the response's close does when the client left before the first byte
    ended(service, observed, "cancelled")


def test_a_failed_admission_starts_nothing(service):
    observed = Observations()
    pool = service.pool()
    held = [pool.admit() for _ in range(pool.stats()["slots"] + pool.max_waiting)]
    with pytest.raises(PoolBusy):
        service.start(job(service), observed)
    for reservation in held:
        reservation.release()
    assert observed.seen == [] and pool.stats()["admitted"] == 0 and service.live() == []


def test_the_whole_file_is_the_joined_stream(service):
    observed = Observations()
    streamed = [e.piece.samples for e in service.start(job(service, seed=3), observed).events() if e.kind == "audio"]
    whole = service.generate(job(service, seed=3))
    assert np.array_equal(np.concatenate(streamed), whole)
    assert [o for o, _ in observed.seen] == ["ok"]


def test_a_second_release_is_a_bug_not_a_no_op(service):
    handle = service.start(job(service))
    handle.close()
    with pytest.raises(LifecycleError):
        handle._end("ok")  # what a second release path would do
    with pytest.raises(LifecycleError):
        handle.events()  # an ended handle has no events to give
    reservation = service.pool().admit()
    reservation.release()
    with pytest.raises(LifecycleError):
        reservation.release()


def test_collect_closes_the_events_so_the_handle_has_ended():
    released = []

    class Place:
        held = True

        def release(self):
            released.append(True)

    def produce(cancel, stats):
        raise ValueError("bad input discovered late")
        yield  # a generator

    handle = Generation("r", produce, Place())
    with pytest.raises(ValueError):
        collect(handle.events())
    assert handle.outcome == "error" and released == [True]
