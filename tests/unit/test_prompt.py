"""Every prompt mode against upstream's format (Boson AI's examples/generation.py), rendered through the chat
template transformers' converter writes into the hub checkpoint (tests/fixtures/hub_chat_template.jinja), and
client strings kept as data whatever they contain.

The expected strings are written out from upstream's code, not rendered by our template: upstream builds the
system message as "Generate audio following instruction.\\n\\n<|scene_desc_start|>\\n...\\n<|scene_desc_end|>",
the reference turns as user transcript + assistant audio; its audio markup in the hub's tokens is
<|audio_out_bos|><|AUDIO_OUT|><|audio_eos|> in assistant turns and <|audio_bos|><|AUDIO_OUT|><|audio_eos|> in the
system message's scene block (upstream's <|audio_bos|><|AUDIO|><|audio_eos|>). The token ids are checked against
upstream's tokenization too: every message's header, each text content and its <|eot_id|> encoded apart."""

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from model_pool.errors import InvalidRequest, UnknownScene, UnknownVoice
from model_pool.prompt.library import SceneLibrary, VoiceLibrary
from model_pool.prompt.planner import MULTI_SPEAKER_SYSTEM, PromptPlanner
from model_pool.request import GenerationRequest, ReferenceClip

HUB_TEMPLATE = (Path(__file__).parent.parent / "fixtures" / "hub_chat_template.jinja").read_text()
SINGLE = "Generate audio following instruction."
AUDIO = "<|audio_out_bos|><|AUDIO_OUT|><|audio_eos|>"
SCENE_AUDIO = "<|audio_bos|><|AUDIO_OUT|><|audio_eos|>"
GEN = "<|start_header_id|>assistant<|end_header_id|>\n\n<|audio_out_bos|>"
ASSISTANT = f"<|start_header_id|>assistant<|end_header_id|>\n\n{AUDIO}<|eot_id|>"
ROOM = "Audio is recorded from a quiet room."


def system(text: str, scene: str | None = None) -> str:
    block = f"\n\n<|scene_desc_start|>\n{scene}\n<|scene_desc_end|>" if scene is not None else ""
    return f"<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{text}{block}<|eot_id|>"


def user(text: str) -> str:
    return f"<|start_header_id|>user<|end_header_id|>\n\n{text}<|eot_id|>"


@pytest.fixture
def planner(voice_dir, scene_dir):
    return PromptPlanner(VoiceLibrary(voice_dir), SceneLibrary(scene_dir))


@pytest.fixture
def render(engine, planner, monkeypatch):
    """Plan a request and render chunk `chunk` through the hub checkpoint's template."""
    monkeypatch.setattr(engine.prompts, "template", HUB_TEMPLATE)

    def _render(chunk=0, generated=(), **kw):
        plan = planner.plan(GenerationRequest(**kw))
        return engine.prompts.render(plan.conversation(chunk, list(generated))), plan

    return _render


CLIP = np.zeros(24000, dtype=np.float32)
GOLDEN = {
    "smart voice, named scene": (
        dict(text="Hello there"), system(SINGLE, ROOM) + user("Hello there.") + GEN),
    "smart voice, free-text scene": (
        dict(text="Hi", scene_prompt="Noisy street, rain."), system(SINGLE, "Noisy street, rain.") + user("Hi.") + GEN),
    "smart voice, no scene": (
        dict(text="Hi", scene_prompt=""), system(SINGLE) + user("Hi.") + GEN),
    "named voice with its transcript, scene": (
        dict(text="Say this.", ref_audio="belinda"),
        system(SINGLE, ROOM) + user("I am Belinda.") + ASSISTANT + user("Say this.") + GEN),
    # Upstream sends no system message here; the hub template requires one, so it is the single-speaker text.
    "named voice, no scene": (
        dict(text="Say this.", ref_audio="belinda", scene_prompt=""),
        system(SINGLE) + user("I am Belinda.") + ASSISTANT + user("Say this.") + GEN),
    "upload with transcript (used as given)": (
        dict(text="Say this.", scene_prompt="", ref_clip=ReferenceClip(CLIP, "  clip words，as spoken  ")),
        system(SINGLE) + user("clip words，as spoken") + ASSISTANT + user("Say this.") + GEN),
    "upload without transcript, no scene: SPEAKER0 on one line, no tag added to the text": (
        dict(text="Say this.", scene_prompt="", ref_clip=ReferenceClip(CLIP, None)),
        system(SINGLE, f"SPEAKER0: {SCENE_AUDIO}") + user("Say this.") + GEN),
    "upload without transcript, with scene": (
        dict(text="Say this.", ref_clip=ReferenceClip(CLIP, None)),
        system(SINGLE, f"{ROOM}\n\nSPEAKER0: {SCENE_AUDIO}") + user("Say this.") + GEN),
    "dialogue, the tags present and sorted": (
        dict(text="[SPEAKER2] Hi.\n[SPEAKER1] Hello."),
        system(MULTI_SPEAKER_SYSTEM, f"{ROOM}\n\nSPEAKER1: feminine\nSPEAKER2: masculine")
        + user("[SPEAKER2] Hi.\n[SPEAKER1] Hello.") + GEN),
    "dialogue without scene: one newline between descriptions": (
        dict(text="[SPEAKER0] Hi. [SPEAKER1] Hello.", scene_prompt=""),
        system(MULTI_SPEAKER_SYSTEM, "SPEAKER0: feminine\nSPEAKER1: masculine")
        + user("[SPEAKER0] Hi. [SPEAKER1] Hello.") + GEN),
    "two voices: transcripts prefixed": (
        dict(text="[SPEAKER0] Hi.\n[SPEAKER1] Hello.", scene_prompt="", ref_audio="belinda,en_man"),
        system(SINGLE) + user("[SPEAKER0] I am Belinda.") + ASSISTANT + user("[SPEAKER1] I am a man.") + ASSISTANT
        + user("[SPEAKER0] Hi.\n[SPEAKER1] Hello.") + GEN),
    "one voice, two tags: no prefix": (
        dict(text="[SPEAKER0] Hi.\n[SPEAKER1] Hello.", scene_prompt="", ref_audio="belinda"),
        system(SINGLE) + user("I am Belinda.") + ASSISTANT + user("[SPEAKER0] Hi.\n[SPEAKER1] Hello.") + GEN),
    "a single profile: described in the scene, no tag added": (
        dict(text="Say this.", scene_prompt="", ref_audio="profile:narrator"),
        system(SINGLE, "SPEAKER0: A calm, low male voice.") + user("Say this.") + GEN),
    "profile mixed with voices: every voice's audio in the scene": (
        dict(text="[SPEAKER0] Hi.\n[SPEAKER1] Hello.\n[SPEAKER2] Hey.", ref_audio="belinda,en_man,profile:narrator"),
        system(SINGLE, f"{ROOM}\n\nSPEAKER0: {SCENE_AUDIO}\nSPEAKER1: {SCENE_AUDIO}\nSPEAKER2: A calm, low male voice.")
        + user("[SPEAKER0] Hi.\n[SPEAKER1] Hello.\n[SPEAKER2] Hey.") + GEN),
    "a voice without transcript goes into the scene": (
        dict(text="Say this.", scene_prompt="", ref_audio="mute"),
        system(SINGLE, f"SPEAKER0: {SCENE_AUDIO}") + user("Say this.") + GEN),
    "text preparation: full-width comma becomes comma and space": (
        dict(text="你好，世界（测试）", scene_prompt=""), system(SINGLE) + user("你好, 世界 测试.") + GEN),
}


@pytest.mark.parametrize("mode", list(GOLDEN))
def test_prompt_modes_match_upstream(render, mode):
    kw, expected = GOLDEN[mode]
    text, _ = render(**kw)
    assert text == expected


@pytest.mark.parametrize("mode", list(GOLDEN))
def test_tiny_checkpoint_template_renders_as_the_hub_template(engine, planner, mode):
    plan = planner.plan(GenerationRequest(**GOLDEN[mode][0]))
    turns = plan.conversation(0, [])
    ours = engine.prompts.render(turns)
    original = engine.prompts.template
    try:
        engine.prompts.template = HUB_TEMPLATE
        hub = engine.prompts.render(turns)
    finally:
        engine.prompts.template = original
    assert ours == hub


def test_long_form_feeds_back_earlier_chunks_within_buffer(render):
    kw = dict(text="One two. Three four. Five six.", scene_prompt="", chunk_method="word", chunk_max_word_num=2,
              generation_chunk_buffer_size=1)
    _, plan = render(**kw)
    assert plan.chunks == ["One two.", "Three four.", "Five six.\n\n"]
    codes = [torch.zeros((3, 8), dtype=torch.long)] * 2
    text, _ = render(chunk=2, generated=codes, **kw)
    # Only the last generated chunk stays in the context (buffer size 1); the paragraph's blank line stays, as
    # upstream tokenizes the chunk (the hub template would trim it).
    assert text == system(SINGLE) + user("Three four.") + ASSISTANT + user("Five six.\n\n") + GEN


LONG_FORM = dict(text="One two. Three four. Five six.", scene_prompt="", chunk_method="word", chunk_max_word_num=2,
                 generation_chunk_buffer_size=1)
TOKENIZED = {**{mode: (kw, 0, expected) for mode, (kw, expected) in GOLDEN.items()},
             "word chunk 2, its blank line kept": (LONG_FORM, 2, system(SINGLE) + user("Three four.") + ASSISTANT
                                                    + user("Five six.\n\n") + GEN)}


def upstream_ids(tok, prompt: str) -> list[int]:
    """The ids upstream feeds for a prompt (boson_multimodal's prepare_chatml_sample, and serve_engine's generation
    prompt ending in <|audio_out_bos|>): each message's header, each text content and its <|eot_id|> encoded apart;
    an audio content as its three markup tokens (placeholder unexpanded)."""
    encode = lambda text: tok.encode(text, add_special_tokens=False)  # noqa: E731
    ids = []
    messages = prompt.split("<|start_header_id|>")
    for i, message in enumerate(messages[1:]):
        header, body = message.split("<|end_header_id|>\n\n", 1)
        if i == len(messages) - 2:  # the generation prompt
            return ids + encode(f"<|start_header_id|>{header}<|end_header_id|>\n\n{body}")
        ids += encode(f"{messages[0] if i == 0 else ''}<|start_header_id|>{header}<|end_header_id|>\n\n")
        for piece in re.split(f"({re.escape(AUDIO)}|{re.escape(SCENE_AUDIO)})", body.removesuffix("<|eot_id|>")):
            ids += encode(piece) if piece else []
        ids += encode("<|eot_id|>")
    raise AssertionError("no generation prompt")


@pytest.mark.parametrize("mode", list(TOKENIZED))
def test_prompt_ids_are_upstreams(engine, planner, mode):
    """Token for token what upstream feeds, the audio placeholders aside (each expanded run counted as one)."""
    kw, chunk, expected = TOKENIZED[mode]
    plan = planner.plan(GenerationRequest(**kw))
    generated = [torch.zeros((3, 8), dtype=torch.long)] * chunk
    ids = engine.encode_prompt(plan.conversation(chunk, generated)).input_ids.tolist()
    tok = engine.prompts.tokenizer
    audio = set(engine.prompts.audio_ids)
    collapsed = [t for i, t in enumerate(ids) if t not in audio or i == 0 or ids[i - 1] not in audio]
    collapsed = [engine.prompts.audio_ids[0] if t in audio else t for t in collapsed]
    assert tok.decode(collapsed) == tok.decode(upstream_ids(tok, expected))
    assert collapsed == upstream_ids(tok, expected)


def _clip_runs(engine, ids: list[int]) -> list[tuple[int, int]]:
    """(start, end) of each expanded audio placeholder run in the ids."""
    audio, runs = set(engine.prompts.audio_ids), []
    for i, t in enumerate(ids):
        if t in audio and (i == 0 or ids[i - 1] not in audio):
            runs.append([i, i])
        if t in audio:
            runs[-1][1] = i + 1
    return [tuple(r) for r in runs]


@pytest.mark.parametrize("kw", [dict(ref_audio="belinda,en_man,profile:narrator",
                                     text="[SPEAKER0] Hi.\n[SPEAKER1] Hello.\n[SPEAKER2] Hey."),
                                dict(ref_audio="mute"), dict(ref_clip=ReferenceClip(CLIP, None))])
def test_scene_block_clips_open_with_upstreams_marker_and_hold_their_own_codes(engine, planner, voice_dir, kw):
    plan = planner.plan(GenerationRequest(**{"text": "Say this.", **kw}))
    prompt = engine.encode_prompt(plan.conversation(0, []))
    ids, tok = prompt.input_ids.tolist(), engine.prompts.tokenizer
    runs = _clip_runs(engine, ids)
    assert len(runs) == len(plan.sources()) >= 1
    row = 0
    for (start, end), source in zip(runs, plan.sources()):
        assert tok.convert_ids_to_tokens([ids[start - 1], ids[end]]) == ["<|audio_bos|>", "<|audio_eos|>"]
        clip = prompt.audio_ids[row:row + end - start]
        row += end - start
        codes = engine.codes_for(source)
        assert torch.equal(torch.stack([clip[1 + k: 1 + k + codes.shape[0], k] for k in range(8)], dim=1), codes)
    assert "<|audio_out_bos|>" not in tok.convert_ids_to_tokens(ids[:-1])  # only the generation prompt's


def test_a_cloned_voice_puts_its_own_codes_in_the_prompt(engine, planner):
    """belinda and en_man are clips of the same length: the prompt holds belinda's codes, not en_man's."""
    belinda, en_man = (engine.codes_for(planner.plan(GenerationRequest(text="Hi", ref_audio=v)).sources()[0])
                       for v in ("belinda", "en_man"))
    assert belinda.shape == en_man.shape and not torch.equal(belinda, en_man)
    prompt = engine.encode_prompt(planner.plan(GenerationRequest(text="Hi", ref_audio="belinda")).conversation(0, []))
    held = torch.stack([prompt.audio_ids[1 + k: 1 + k + belinda.shape[0], k] for k in range(8)], dim=1)
    assert torch.equal(held, belinda)


def test_the_ras_context_is_the_assistant_audio_only(engine, planner):
    """Upstream's RAS window starts in its audio-out sequence: the assistant turns' audio (a clone's reference, the
    previous chunk), not the scene block's clips (audio-in there)."""
    clone = engine.encode_prompt(planner.plan(GenerationRequest(text="Hi", ref_audio="belinda")).conversation(0, []))
    assert torch.equal(clone.audio_out_tail, clone.audio_ids)  # one clip, 59 columns
    scene = engine.encode_prompt(planner.plan(GenerationRequest(text="Hi", ref_audio="mute")).conversation(0, []))
    assert scene.audio_ids is not None and scene.audio_out_tail is None
    plan = planner.plan(GenerationRequest(**LONG_FORM, ref_audio="belinda"))
    previous = torch.arange(24).view(3, 8)
    chunk = engine.encode_prompt(plan.conversation(2, [torch.zeros((3, 8), dtype=torch.long), previous]))
    last = chunk.audio_out_tail[-(3 + 9):]  # the previous chunk's 3 frames + stream begin/end + 7 delay columns
    assert torch.equal(torch.stack([last[1 + k: 4 + k, k] for k in range(8)], dim=1), previous)
    assert chunk.audio_out_tail.shape[0] == chunk.audio_ids.shape[0]  # everything: under MAX_RAS_WINDOW


def test_encoded_prompt_expands_audio_with_delay_pattern(engine, planner):
    plan = planner.plan(GenerationRequest(text="Hi", ref_audio="belinda"))
    prompt = engine.encode_prompt(plan.conversation(0, []))
    frames = engine.codes_for(plan.sources()[0]).shape[0]
    assert frames == 50  # two seconds at 25 frames/s
    assert prompt.audio_ids.shape == (frames + 2 + 7, 8)
    ids = prompt.input_ids.tolist()
    tok = engine.prompts.tokenizer
    n_audio = ids.count(tok.convert_tokens_to_ids("<|AUDIO_OUT|>"))
    n_delay = ids.count(tok.convert_tokens_to_ids("<|reserved_special_token_6|>"))
    assert (n_audio, n_delay) == (frames + 2, 7)
    assert prompt.audio_ids[0].tolist() == [1024] * 8 and prompt.audio_ids[-1].tolist() == [1025] * 8
    # The same ids as the processor's way: expand the placeholders in the text, then tokenize it whole.
    rendered = engine.prompts.render(plan.conversation(0, []))
    expanded = rendered.replace("<|AUDIO_OUT|>", engine.prompts.processor.get_audio_tokens(frames + 9))
    assert ids == tok(expanded, add_special_tokens=False)["input_ids"]


def _special_counts(engine, ids: torch.Tensor) -> Counter:
    special = set(engine.prompts.tokenizer.added_tokens_encoder.values())
    return Counter(i for i in ids.tolist() if i in special)


@pytest.mark.parametrize("field", ["text", "transcript", "ref_text", "scene", "profile"])
def test_client_strings_never_become_prompt_structure(engine, planner, voice_dir, field):
    """Every special token of the tokenizer, in every client-controlled field: the prompt keeps exactly the
    special tokens the template put there, and the client's token comes through as plain text."""
    specials = list(engine.prompts.tokenizer.added_tokens_encoder)
    assert len(specials) >= 11

    def request(value: str) -> GenerationRequest:
        (voice_dir / "v.txt").write_text(f"Reference {value} words." if field == "transcript" else "Reference.")
        (voice_dir / "profile.yaml").write_text(f"profiles:\n  p: 'Calm {value} voice'\n")
        kw = {"text": f"Speak {value} now." if field == "text" else "Speak now.", "scene_prompt": ""}
        if field in ("transcript", "ref_text"):
            kw["ref_audio" if field == "transcript" else "ref_clip"] = (
                "v" if field == "transcript" else ReferenceClip(CLIP, f"Clip {value} words."))
        elif field == "scene":
            kw["scene_prompt"] = f"A room {value} with echo."
        else:
            kw["ref_audio"] = "profile:p"
        return GenerationRequest(**kw)

    (voice_dir / "v.wav").write_bytes((voice_dir / "belinda.wav").read_bytes())
    baseline = _special_counts(engine, engine.encode_prompt(planner.plan(request("plain")).conversation(0, []))
                               .input_ids)
    for token in specials:
        prompt = engine.encode_prompt(planner.plan(request(token)).conversation(0, []))
        assert _special_counts(engine, prompt.input_ids) == baseline, token
        spoken = engine.prompts.tokenizer(token, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        ids = prompt.input_ids.tolist()
        assert any(ids[i:i + len(spoken)] == spoken for i in range(len(ids))), token


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
def test_plan_errors_name_the_field(planner, kw, error, field):
    with pytest.raises(error) as info:
        planner.plan(GenerationRequest(**kw))
    assert info.value.field == field
