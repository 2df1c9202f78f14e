import threading
import time

import pytest

from model_pool.errors import PoolBusy
from model_pool.lifecycle import LifecycleError
from model_pool.pool import ModelPool, split_cpu_threads


class FakeEngine:
    def __init__(self, name, device="cpu", capacity=1):
        self.name, self.device, self.capacity = name, device, capacity


def test_lend_returns_instance_after_exception():
    pool = ModelPool([FakeEngine("a")])
    with pytest.raises(RuntimeError):
        with pool.lend(1) as engine:
            assert pool.stats()["busy"] == 1
            raise RuntimeError("boom")
    assert pool.stats()["free"] == 1
    with pool.lend(0.1) as again:
        assert again is engine


def test_lend_times_out_with_busy_error():
    pool = ModelPool([FakeEngine("a")])
    with pool.lend(1):
        start = time.monotonic()
        with pytest.raises(PoolBusy, match="within 0.2s"):
            with pool.lend(0.2):
                pass
        assert time.monotonic() - start >= 0.2
    assert pool.stats() == {"instances": 1, "busy": 0, "free": 1, "requests": 0, "slots": 1, "waiting": 0,
                            "admitted": 0, "devices": {"cpu": {"total": 1, "busy": 0, "free": 1, "requests": 0}}}


def test_generator_close_gives_instance_back():
    pool = ModelPool([FakeEngine("a")])

    def stream():
        with pool.lend(1):
            while True:
                yield 1

    gen = stream()
    next(gen)
    assert pool.stats()["busy"] == 1
    gen.close()  # what a WSGI server does when a client goes away
    assert pool.stats()["busy"] == 0


def test_waiters_are_counted_and_served_in_turn():
    pool = ModelPool([FakeEngine("a"), FakeEngine("b", "cuda:1")])
    got = []
    waiting = threading.Event()

    def borrower():
        with pool.lend(5) as e:
            got.append(e.name)

    with pool.lend(1), pool.lend(1):
        t = threading.Thread(target=borrower)
        t.start()
        while pool.stats()["waiting"] == 0:
            waiting.wait(0.01)
        stats = pool.stats()
        assert stats["waiting"] == 1 and stats["busy"] == 2
        assert stats["devices"]["cuda:1"] == {"total": 1, "busy": 1, "free": 0, "requests": 1}
    t.join(5)
    assert got and pool.stats()["busy"] == 0


def test_full_queue_refuses_at_once():
    pool = ModelPool([FakeEngine("a")], max_waiting=0)
    with pool.lend(1):
        start = time.monotonic()
        with pytest.raises(PoolBusy, match="waiting"):
            with pool.lend(10):
                pass
        assert time.monotonic() - start < 1


def test_admission_holds_a_place_until_the_request_ends():
    """admit() counts a request before it starts waiting, so concurrent admissions cannot overfill the queue; an
    admitted request that never reaches lend() (its client left before the response began) gives its place back."""
    pool = ModelPool([FakeEngine("a")], max_waiting=1)
    first, second = pool.admit(), pool.admit()  # one slot + one waiting place
    with pytest.raises(PoolBusy):
        pool.admit()
    with pool.lend(1, reservation=first):
        assert pool.stats()["admitted"] == 2
    assert pool.stats()["admitted"] == 2  # the owner of a reservation releases it, not lend()
    first.release()
    assert pool.stats()["admitted"] == 1 and pool.leaks == 0
    del second  # dropped unreleased: reclaimed, and counted as the leak it is
    assert pool.stats()["admitted"] == 0 and pool.leaks == 1
    third = pool.admit()
    third.release()
    with pytest.raises(LifecycleError):  # a second release is a bug, never a silent no-op
        third.release()
    assert pool.stats()["admitted"] == 0


def test_cpu_threads_are_split_between_instances():
    assert split_cpu_threads(1, cores=8) == 7  # one core left for stream decoding and HTTP
    assert split_cpu_threads(2, cores=8) == 3
    assert split_cpu_threads(1, cores=2) == 1
    assert split_cpu_threads(1, cores=1) == 1
    assert split_cpu_threads(16, cores=8) == 1


class BatchingEngine(FakeEngine):
    def __init__(self, name, slots):
        super().__init__(name)
        self.capacity = slots


def test_batch_slots_spread_requests_over_instances():
    a, b = BatchingEngine("a", 2), BatchingEngine("b", 2)
    pool = ModelPool([a, b], max_waiting=0)
    with pool.lend(1) as first, pool.lend(1) as second, pool.lend(1) as third, pool.lend(1) as fourth:
        assert {first.name, second.name} == {"a", "b"}  # least loaded first
        assert sorted([first.name, second.name, third.name, fourth.name]) == ["a", "a", "b", "b"]
        stats = pool.stats()
        assert (stats["busy"], stats["requests"], stats["slots"]) == (2, 4, 4)
        with pytest.raises(PoolBusy):
            with pool.lend(1):
                pass
    assert pool.stats()["requests"] == 0


def test_cpu_threads_flag_reaches_torch(tiny_checkpoint):
    import torch

    from api_server import parse_args

    settings, _ = parse_args(["--cpu-threads", "2"])
    assert settings.cpu_threads == 2 and settings.environ()["HIGGS_CPU_THREADS"] == "2"
    before = torch.get_num_threads()
    try:
        ModelPool.load(str(tiny_checkpoint / "model"), str(tiny_checkpoint / "audio_tokenizer"), device="cpu",
                       cpu_threads=settings.cpu_threads)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


GIB = 1024**3


def test_memory_plan_fits_slots_to_free_memory():
    from model_pool.engine.memory import plan_slots

    token = 112 * 1024  # the real model in bf16: 28 layers x 8 KV heads x 128 x 2 (K and V) x 2 bytes
    # A 24 GB card after the weights (~10.75 GB) and the codec (~0.8 GB): about 12 GiB free.
    plan = plan_slots("cuda:0", 12 * GIB, token, 4160, requested=32)
    assert plan.slots == 22 and "of 32 requested" in plan.describe()  # (12 - 2 reserve) GiB / 455 MiB
    assert plan_slots("cuda:0", 12 * GIB, token, 8192, requested=8).slots == 8
    assert plan_slots("cuda:0", 12 * GIB, token, 8192, requested=32).slots == 11
    two = plan_slots("cuda:0", 12 * GIB, token, 8192, requested=32, instances=2)
    assert two.slots == 5  # two instances share the device
    assert plan_slots("mps", None, token, 8192, requested=8).slots == 8  # no free-memory reading: as requested


def test_memory_plan_refuses_when_one_slot_does_not_fit():
    from model_pool.engine.memory import plan_slots
    from model_pool.errors import ModelLoadError

    with pytest.raises(ModelLoadError) as info:
        plan_slots("cuda:0", int(2.5 * GIB), 112 * 1024, 8192, requested=8)
    assert "not enough memory on cuda:0" in info.value.message and "--max-context-tokens" in info.value.message


def test_compile_auto_means_cuda_only_and_one_instance(tiny_checkpoint):
    import torch

    from model_pool.errors import ModelLoadError
    from model_pool.pool import compile_enabled

    assert compile_enabled("auto", torch.device("cuda", 0)) and not compile_enabled("auto", torch.device("cpu"))
    assert compile_enabled("on", torch.device("cpu")) and not compile_enabled("off", torch.device("cuda", 0))
    with pytest.raises(ModelLoadError, match="one instance per device"):
        ModelPool.load(str(tiny_checkpoint / "model"), str(tiny_checkpoint / "audio_tokenizer"), device="cpu",
                       instances_per_device=2, compile="on")
