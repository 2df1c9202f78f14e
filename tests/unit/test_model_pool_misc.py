"""Voice cache, loader errors, devices, the tiny checkpoint, and the service layer on the tiny model."""

import os
import threading

import numpy as np
import pytest
import torch

from helpers import write_voice
from model_pool.audio import decode_clip
from model_pool.engine.loader import load, resolve_devices
from model_pool.errors import Cancelled, InvalidRequest, ModelLoadError
from model_pool.pool import ModelPool
from model_pool.pool_loader import PoolLoader
from model_pool.prompt.library import SceneLibrary, VoiceLibrary
from model_pool.request import GenerationRequest, SamplingParams
from model_pool.service import GenerationStats, TTSService


def test_voice_cache_hits_and_invalidates_on_change(engine, tmp_path):
    path = write_voice(tmp_path, "v", seconds=1.0, seed=1)
    calls = []

    def encode(samples):
        calls.append(len(samples))
        return engine.codec.encode(samples)

    cache = engine.voice_cache.__class__()
    first = cache.get(str(path), encode)
    second = cache.get(str(path), encode)
    assert torch.equal(first, second) and len(calls) == 1 and (cache.hits, cache.misses) == (1, 1)
    write_voice(tmp_path, "v", seconds=1.0, seed=2)  # another voice of the same length
    os.utime(path, ns=(1, 10**18))
    third = cache.get(str(path), encode)
    assert len(calls) == 2 and third.shape == first.shape and not torch.equal(third, first)
    assert torch.equal(third, engine.codec.encode(decode_clip(str(path), "ref_audio", 30.0)))


def test_voice_cache_sees_a_replaced_voice_of_the_same_size_and_mtime(engine, tmp_path):
    """The library replaces a voice by renaming a new file over it; same length, same mtime (one timestamp tick):
    the cache must still encode the new clip, not hand out the old voice's codes."""
    path = write_voice(tmp_path, "v", seconds=1.0, seed=1)
    cache = engine.voice_cache.__class__()
    first = cache.get(str(path), engine.codec.encode)
    old = os.stat(path)
    staged = write_voice(tmp_path, "staged", seconds=1.0, seed=2)
    os.utime(staged, ns=(old.st_atime_ns, old.st_mtime_ns))
    os.replace(staged, path)
    assert (os.stat(path).st_size, os.stat(path).st_mtime_ns) == (old.st_size, old.st_mtime_ns)
    second = cache.get(str(path), engine.codec.encode)
    assert cache.misses == 2 and not torch.equal(first, second)


def test_missing_model_path_names_path_and_suggests_local(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(ModelLoadError) as info:
        load(missing, missing, torch.device("cpu"))
    assert missing in info.value.message and "--model-path" in info.value.message


def test_hub_id_offline_explains(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as info:
        load("bosonai/higgs-audio-v2-generation-3B-base", "bosonai/higgs-audio-v2-tokenizer", torch.device("cpu"))
    msg = info.value.message
    assert "bosonai/higgs-audio-v2-generation-3B-base" in msg and "offline" in msg and "make demo" in msg


def test_resolve_devices():
    assert [str(d) for d in resolve_devices("cpu")] == ["cpu"]
    assert resolve_devices("auto")[0].type in ("cpu", "cuda", "mps")
    with pytest.raises(ModelLoadError, match="unknown device"):
        resolve_devices("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="CUDA is not available"):
            resolve_devices("cuda:0")


def test_tiny_checkpoint_loads_like_the_hub_layout_with_the_real_codec_geometry(tiny_checkpoint, engine):
    """transformers' Auto classes resolve both parts (the hub layout), and the codec makes what the real one makes:
    25 frames of 8 codebooks per second of 24 kHz audio, and 960 samples back per frame."""
    from transformers import AutoConfig, AutoFeatureExtractor

    assert type(AutoConfig.from_pretrained(tiny_checkpoint / "model")).__name__ == "HiggsAudioV2Config"
    assert type(AutoConfig.from_pretrained(tiny_checkpoint / "audio_tokenizer")).__name__ == \
        "HiggsAudioV2TokenizerConfig"
    assert AutoFeatureExtractor.from_pretrained(tiny_checkpoint / "audio_tokenizer").sampling_rate == 24000
    codes = engine.codec.encode(np.zeros(48000, dtype=np.float32))
    assert codes.shape == (50, 8)
    assert engine.codec.decode(codes).shape == (48000,)


def test_tiny_checkpoint_is_deterministic(tiny_checkpoint, tmp_path):
    from safetensors.torch import load_file

    from model_pool import tiny

    again = tiny.build(tmp_path / "again")
    for part in ("model", "audio_tokenizer"):
        a = load_file(tiny_checkpoint / part / "model.safetensors")
        b = load_file(again / part / "model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def service(engine, voice_dir, scene_dir):
    pool = ModelPool([engine])
    return TTSService(PoolLoader.of(pool), VoiceLibrary(voice_dir), SceneLibrary(scene_dir), max_new_tokens=200)


def test_service_long_form_seeded_reproducible(service):
    req = GenerationRequest(text="One two. Three four.", chunk_method="word", chunk_max_word_num=2,
                            sampling=SamplingParams(seed=3, max_new_tokens=30))
    stats = GenerationStats()
    a = service.generate(service.prepare(req), stats)
    b = service.generate(service.prepare(req))
    assert np.array_equal(a, b)
    assert a.shape == (2 * 22 * 960,) and stats.frames == 44 and stats.first_audio_s is not None


def test_service_stream_pieces_progress_and_clone(service):
    req = GenerationRequest(text="Hi there.", ref_audio="belinda", sampling=SamplingParams(seed=1, max_new_tokens=40))
    pieces = list(service.stream(service.prepare(req)))
    assert len(pieces) >= 2
    assert [p.chunk for p in pieces] == [0] * len(pieces) and pieces[-1].generated_tokens == 40
    assert sum(p.samples.shape[0] for p in pieces) == 32 * 960
    hits = service.pool().engines[0].voice_cache.hits
    list(service.stream(service.prepare(req)))
    assert service.pool().engines[0].voice_cache.hits == hits + 1


def test_service_bounds_max_new_tokens_and_the_request_budget(service):
    with pytest.raises(InvalidRequest) as info:
        service.prepare(GenerationRequest(text="Hi", sampling=SamplingParams(max_new_tokens=201)))
    assert info.value.field == "max_new_tokens"
    service.max_request_steps = 100
    text = "\n".join(f"[SPEAKER0] Turn {i}." for i in range(5))
    service.prepare(GenerationRequest(text=text, chunk_method="speaker", sampling=SamplingParams(max_new_tokens=20)))
    with pytest.raises(InvalidRequest) as info:  # 5 chunks x 21 steps > 100
        service.prepare(GenerationRequest(text=text, chunk_method="speaker",
                                          sampling=SamplingParams(max_new_tokens=21)))
    assert info.value.field == "max_new_tokens" and "5 chunk(s)" in info.value.message and "100" in info.value.message


def test_service_cancel_raises_and_frees_instance(service):
    cancel = threading.Event()
    stream = service.stream(service.prepare(GenerationRequest(text="Hi", sampling=SamplingParams(max_new_tokens=150))),
                            cancel)
    next(stream)
    cancel.set()
    with pytest.raises(Cancelled):
        list(stream)
    assert service.pool().stats()["busy"] == 0


def _damaged_copy(tiny_checkpoint, tmp_path, edit):
    import glob
    import shutil

    from safetensors.torch import load_file, save_file

    copy = tmp_path / "damaged"
    shutil.copytree(tiny_checkpoint, copy)
    path = glob.glob(str(copy / "model" / "*.safetensors"))[0]
    weights = load_file(path)
    edit(weights)
    save_file(weights, path, metadata={"format": "pt"})
    return copy


@pytest.mark.parametrize("edit, named", [
    (lambda w: w.pop("model.norm.weight"), "missing keys: model.norm.weight"),
    (lambda w: w.__setitem__("model.extra.weight", torch.zeros(3)), "unexpected keys: model.extra.weight"),
])
def test_partial_checkpoints_are_refused_naming_the_keys(tiny_checkpoint, tmp_path, edit, named):
    damaged = _damaged_copy(tiny_checkpoint, tmp_path, edit)
    with pytest.raises(ModelLoadError) as info:
        load(str(damaged / "model"), str(damaged / "audio_tokenizer"), torch.device("cpu"))
    assert named in info.value.message and str(damaged / "model") in info.value.message


def test_codec_must_match_the_models_codebooks(tiny_checkpoint, monkeypatch):
    from transformers import HiggsAudioV2ForConditionalGeneration

    original = HiggsAudioV2ForConditionalGeneration.from_pretrained

    def sixteen_codebooks(*args, **kwargs):
        model, info = original(*args, **kwargs)
        model.config.num_codebooks = 16
        return model, info

    monkeypatch.setattr(HiggsAudioV2ForConditionalGeneration, "from_pretrained", sixteen_codebooks)
    with pytest.raises(ModelLoadError, match="8 quantizers but the model .* expects 16 codebooks"):
        load(str(tiny_checkpoint / "model"), str(tiny_checkpoint / "audio_tokenizer"), torch.device("cpu"))


def test_codec_loads_in_float32_and_encodes_without_padding(loaded, engine, monkeypatch):
    assert loaded.processor.audio_tokenizer.dtype == torch.float32
    seen = []
    original = loaded.processor.audio_tokenizer.encode

    def spy(values, **kw):
        seen.append(values.shape[-1])
        return original(values, **kw)

    monkeypatch.setattr(loaded.processor.audio_tokenizer, "encode", spy)
    monkeypatch.setattr(loaded.processor.feature_extractor, "hop_length", 960)  # the hub's extractor config
    engine.codec.encode(np.zeros(24001, dtype=np.float32))
    assert seen == [24001]  # padded to the hop it would be 24960
