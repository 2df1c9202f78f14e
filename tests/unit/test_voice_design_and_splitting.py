"""The model side of vllm-omni's and sglang-omni's session fields: a described voice (task_type VoiceDesign) is
planned exactly as a profile of the same text; split_granularity's clause and none modes cut by the text alone; a
request's first audio piece has the frames it asked for."""

from __future__ import annotations

import numpy as np
import pytest

from model_pool.errors import InvalidRequest
from model_pool.pool import ModelPool
from model_pool.pool_loader import PoolLoader
from model_pool.prompt.library import SceneLibrary, VoiceLibrary
from model_pool.prompt.planner import PromptPlanner
from model_pool.request import SAMPLES_PER_FRAME, GenerationRequest, ReferenceClip, SamplingParams
from model_pool.sentences import SentenceSplitter
from model_pool.service import TTSService


@pytest.fixture
def planner(voice_dir, scene_dir):
    return PromptPlanner(VoiceLibrary(voice_dir), SceneLibrary(scene_dir))


def test_a_described_voice_is_planned_as_the_profile_of_that_text(planner):
    profile = planner.plan(GenerationRequest(text="Say this.", ref_audio="profile:narrator"))
    designed = planner.plan(GenerationRequest(text="Say this.", voice_description="  A calm,  low male voice. "))
    assert designed.scene == profile.scene and designed.system == profile.system
    assert designed.context == profile.context == []


@pytest.mark.parametrize("kw", [dict(ref_audio="belinda"), dict(ref_clip=ReferenceClip(np.zeros(10, np.float32)))])
def test_a_described_voice_is_the_only_voice(planner, kw):
    with pytest.raises(InvalidRequest) as refused:
        planner.plan(GenerationRequest(text="Hi.", voice_description="A calm voice.", names={
            "voice_description": "instructions"}, **kw))
    assert refused.value.field == "instructions"
    with pytest.raises(InvalidRequest):
        planner.plan(GenerationRequest(text="Hi.", voice_description="   "))


TEXT = "Well, hello there: how are you? Fine, 1,000 thanks、好。And you"


def _split(granularity: str, pieces: list[str]) -> list[str]:
    splitter = SentenceSplitter(granularity=granularity)
    out = [s for piece in pieces for s in splitter.feed(piece)]
    return out + splitter.flush()


@pytest.mark.parametrize("granularity, expected", [
    ("sentence", ["Well, hello there: how are you?", "Fine, 1,000 thanks、好。", "And you"]),
    ("clause", ["Well,", "hello there:", "how are you?", "Fine,", "1,000 thanks、", "好。", "And you"]),
    ("none", [TEXT]),
])
def test_each_granularity_cuts_by_the_text_alone(granularity, expected):
    assert _split(granularity, [TEXT]) == expected
    assert _split(granularity, list(TEXT)) == expected  # character by character: the same cuts
    assert _split(granularity, [w + " " for w in TEXT.split(" ")])[:-1] == expected[:-1]


def test_none_waits_for_the_end_of_the_utterance():
    splitter = SentenceSplitter(granularity="none")
    assert splitter.feed("One sentence. Another one. ") == []
    assert splitter.flush() == ["One sentence. Another one."]
    with pytest.raises(ValueError):
        SentenceSplitter(granularity="word")


@pytest.mark.parametrize("first, frames", [(None, 2), (5, 5), (0, 10)])
def test_the_first_audio_piece_has_the_frames_asked_for(engine, planner, first, frames):
    """The decoder's schedule is 2 frames first, then 10: initial_codec_chunk_frames replaces the first (0: as
    large as the second)."""
    service = TTSService(PoolLoader.of(ModelPool([engine])), planner.voices, planner.scenes, max_new_tokens=60)
    sampling = SamplingParams(temperature=0, max_new_tokens=40, first_chunk_frames=first)
    job = service.prepare(GenerationRequest(text="Hello there.", ref_audio="belinda", sampling=sampling))
    pieces = list(service.stream(job))
    assert pieces[0].samples.shape[0] == frames * SAMPLES_PER_FRAME
    whole = service.prepare(GenerationRequest(text="Hello there.", ref_audio="belinda",
                                              sampling=SamplingParams(temperature=0, max_new_tokens=40)))
    assert np.allclose(np.concatenate([p.samples for p in pieces]),
                       np.concatenate([p.samples for p in service.stream(whole)]), atol=1e-5)
