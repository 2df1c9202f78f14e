"""A realtime session's sentences are chunks of one long-form generation: each is generated with the earlier ones
(text and codes) in its context, so the session's audio is the long-form engine's audio for the same chunks."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from model_pool.lifecycle import collect
from model_pool.pool import ModelPool
from model_pool.pool_loader import PoolLoader
from model_pool.prompt import text as textprep
from model_pool.prompt.library import SceneLibrary, VoiceLibrary
from model_pool.request import GenerationRequest, SamplingParams
from model_pool.service import PreparedJob, TTSService

SENTENCES = ["Good morning.", "The weather is fine today.", "Shall we go?"]


@pytest.fixture
def service(engine, voice_dir, scene_dir):
    return TTSService(PoolLoader.of(ModelPool([engine])), VoiceLibrary(voice_dir), SceneLibrary(scene_dir))


def request(**sampling) -> GenerationRequest:
    return GenerationRequest(text="", ref_audio="belinda", scene_prompt="",
                             sampling=SamplingParams(**{"seed": 11, "max_new_tokens": 40, **sampling}))


def spoken(service, conversation, sentence: str) -> np.ndarray:
    return collect(service.start_sentence(conversation, sentence).events())


def test_a_session_is_the_long_form_engine_for_the_same_chunks(service):
    conversation = service.prepare_conversation(request(), "s1")
    session = [spoken(service, conversation, s) for s in SENTENCES]
    assert conversation.sentences == [textprep.normalize(s) for s in SENTENCES]
    plan = replace(conversation.context.plan, chunks=conversation.sentences)
    longform = service.generate(PreparedJob(plan, conversation.sampling, "lf", " ".join(SENTENCES)))
    assert np.array_equal(np.concatenate(session), longform)


def test_a_cancelled_sentence_is_no_history(service):
    conversation = service.prepare_conversation(request(max_new_tokens=300), "s2")
    spoken(service, conversation, SENTENCES[0])
    handle = service.start_sentence(conversation, "This one is interrupted.")
    for event in handle.events():
        if event.kind == "audio":
            handle.abort()
    assert handle.outcome == "cancelled" and conversation.sentences == [textprep.normalize(SENTENCES[0])]
    assert len(conversation.context.generated) == 1 and service.pool().stats()["admitted"] == 0


def test_a_sentence_that_cannot_fit_alone_is_refused_before_admission(service):
    conversation = service.prepare_conversation(request(), "s3")
    service.max_text_chars = 30
    with pytest.raises(Exception, match="limit is 30"):
        service.start_sentence(conversation, "A sentence that is certainly longer than thirty characters.")
    assert service.pool().stats()["admitted"] == 0


def test_a_new_config_with_the_same_voice_continues_the_history(service):
    one = service.prepare_conversation(request(), "s4")
    straight = [spoken(service, one, s) for s in SENTENCES[:2]]
    first = service.prepare_conversation(request(), "s5")
    spoken(service, first, SENTENCES[0])
    second = service.prepare_conversation(request(), "s5").continuing(first)  # session.config sent again
    assert np.array_equal(spoken(service, second, SENTENCES[1]), straight[1])
    assert first.sentences == second.sentences == one.sentences  # one history, whichever config spoke
    fresh = service.prepare_conversation(request(), "s6")
    assert not np.array_equal(spoken(service, fresh, SENTENCES[1]), straight[1])  # without it: another audio
