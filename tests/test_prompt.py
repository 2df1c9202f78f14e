"""The rendered prompt of every mode, against the checkpoint's chat format."""

import numpy as np
import pytest

from model_pool.errors import InvalidRequest, UnknownScene, UnknownVoice
from model_pool.prompt.library import SceneLibrary, VoiceLibrary
from model_pool.prompt.planner import MULTI_SPEAKER_SYSTEM, PromptPlanner
from model_pool.request import GenerationRequest, ReferenceClip

SYS = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
AUDIO = "<|audio_out_bos|><|AUDIO_OUT|><|audio_eos|>"
GEN = "<|start_header_id|>assistant<|end_header_id|>\n\n<|audio_out_bos|>"


def user(text):
    return f"<|start_header_id|>user<|end_header_id|>\n\n{text}<|eot_id|>"


ASSISTANT = f"<|start_header_id|>assistant<|end_header_id|>\n\n{AUDIO}<|eot_id|>"


@pytest.fixture
def render(engine, voice_dir, scene_dir):
    planner = PromptPlanner(VoiceLibrary(voice_dir), SceneLibrary(scene_dir))

    def _render(chunk=0, generated=(), **kw):
        plan = planner.plan(GenerationRequest(**kw))
        return engine.render(plan.conversation(chunk, list(generated))), plan

    return _render


def test_smart_voice_with_named_scene(render):
    text, _ = render(text="Hello there")
    assert text == (
        SYS + "Generate audio following instruction.\n\n<|scene_desc_start|>\nAudio is recorded from a quiet room."
        "\n<|scene_desc_end|><|eot_id|>" + user("Hello there.") + GEN
    )


def test_free_text_scene_and_empty_scene(render):
    text, _ = render(text="Hi", scene_prompt="Noisy street, rain.")
    assert "<|scene_desc_start|>\nNoisy street, rain.\n<|scene_desc_end|>" in text
    text, _ = render(text="Hi", scene_prompt="")
    assert text == SYS + "Generate audio following instruction.<|eot_id|>" + user("Hi.") + GEN


def test_named_voice_clone(render):
    text, _ = render(text="Say this.", ref_audio="belinda", scene_prompt=None)
    assert text == (
        SYS + "Generate audio following instruction.<|eot_id|>" + user("I am Belinda.") + ASSISTANT + user("Say this.") + GEN
    )


def test_uploaded_clip_with_and_without_transcript(render):
    clip = np.zeros(24000, dtype=np.float32)
    text, _ = render(text="Say this.", scene_prompt="", ref_clip=ReferenceClip(clip, 24000, "Clip words"))
    assert text.endswith(user("Clip words.") + ASSISTANT + user("Say this.") + GEN)
    text, _ = render(text="Say this.", scene_prompt="", ref_clip=ReferenceClip(clip, 24000, None))
    assert text == (
        # The checkpoint's template puts a blank line after the first scene item, then " <audio>".
        SYS + "Generate audio following instruction.\n\n<|scene_desc_start|>\nSPEAKER0:\n\n " + AUDIO
        + "\n<|scene_desc_end|><|eot_id|>" + user("[SPEAKER0] Say this.") + GEN
    )


def test_multi_speaker_smart_voice_default_descriptions(render):
    text, _ = render(text="[SPEAKER0] Hi.\n[SPEAKER1] Hello.")
    assert text == (
        SYS + MULTI_SPEAKER_SYSTEM + "\n\n<|scene_desc_start|>\nAudio is recorded from a quiet room.\n\n"
        "SPEAKER0: feminine\nSPEAKER1: masculine\n<|scene_desc_end|><|eot_id|>"
        + user("[SPEAKER0] Hi.\n[SPEAKER1] Hello.") + GEN
    )


def test_multi_speaker_clone_list_and_profile(render):
    text, _ = render(text="[SPEAKER0] Hi.\n[SPEAKER1] Hello.\n[SPEAKER2] Hey.", scene_prompt="",
                     ref_audio="belinda,en_man,profile:narrator")
    assert text == (
        SYS + "Generate audio following instruction.\n\n<|scene_desc_start|>\nSPEAKER2: A calm, low male voice."
        "\n<|scene_desc_end|><|eot_id|>"
        + user("[SPEAKER0] I am Belinda.") + ASSISTANT + user("[SPEAKER1] I am a man.") + ASSISTANT
        + user("[SPEAKER0] Hi.\n[SPEAKER1] Hello.\n[SPEAKER2] Hey.") + GEN
    )


def test_long_form_feeds_back_earlier_chunks_within_buffer(render):
    kw = dict(text="One two. Three four. Five six.", scene_prompt="", chunk_method="word", chunk_max_word_num=2,
              generation_chunk_buffer_size=1)
    _, plan = render(**kw)
    assert plan.chunks == ["One two.", "Three four.", "Five six."]
    import torch
    codes = [torch.zeros((3, 8), dtype=torch.long)] * 2
    text, _ = render(chunk=2, generated=codes, **kw)
    # Only the last generated chunk stays in the context (buffer size 1).
    assert text == SYS + "Generate audio following instruction.<|eot_id|>" + user("Three four.") + ASSISTANT + user("Five six.") + GEN


def test_encoded_prompt_expands_audio_with_delay_pattern(engine, voice_dir, scene_dir):
    planner = PromptPlanner(VoiceLibrary(voice_dir), SceneLibrary(scene_dir))
    plan = planner.plan(GenerationRequest(text="Hi", ref_audio="belinda"))
    prompt = engine.encode_prompt(plan.conversation(0, []))
    frames = engine.codes_for(plan.context[1]["content"][0]["source"]).shape[0]
    assert frames == 50  # two seconds at 25 frames/s
    assert prompt.audio_ids.shape == (frames + 2 + 7, 8)
    ids = prompt.input_ids.tolist()
    tok = engine.processor.tokenizer
    n_audio = ids.count(tok.convert_tokens_to_ids("<|AUDIO_OUT|>"))
    n_delay = ids.count(tok.convert_tokens_to_ids("<|reserved_special_token_6|>"))
    assert (n_audio, n_delay) == (frames + 2, 7)
    assert prompt.audio_ids[0].tolist() == [1024] * 8 and prompt.audio_ids[-1].tolist() == [1025] * 8


@pytest.mark.parametrize(
    "kw, error, field",
    [
        (dict(text="   "), InvalidRequest, "text"),
        (dict(text="Hi", ref_audio="nobody"), UnknownVoice, "ref_audio"),
        (dict(text="Hi", ref_audio="profile:nobody"), UnknownVoice, "ref_audio"),
        (dict(text="Hi", ref_audio="../etc/passwd"), InvalidRequest, "ref_audio"),
        (dict(text="Hi", scene_prompt="nowhere"), UnknownScene, "scene_prompt"),
        (dict(text="Hi", scene_prompt="../../etc/passwd"), InvalidRequest, "scene_prompt"),
        (dict(text="Hi", ref_audio="belinda,en_man"), InvalidRequest, "ref_audio"),
    ],
)
def test_plan_errors_name_the_field(render, kw, error, field):
    with pytest.raises(error) as info:
        render(**kw)
    assert info.value.field == field
