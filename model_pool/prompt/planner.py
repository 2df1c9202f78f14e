"""Turn a GenerationRequest into a PromptPlan: the conversation of every mode, in the checkpoint's chat format.

Planning resolves names and reads transcripts and profiles, so an unknown voice or scene fails here, before a
model instance is taken and before any stream starts. Audio stays symbolic (AudioSource); an engine instance
turns it into codes (with the voice cache) when it renders the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidRequest
from ..request import GenerationRequest
from . import text as textprep
from .library import PROFILE_PREFIX, SceneLibrary, VoiceLibrary

SINGLE_SPEAKER_SYSTEM = "Generate audio following instruction."
MULTI_SPEAKER_SYSTEM = (
    "You are an AI assistant designed to convert text into speech.\n"
    "If the user's message includes a [SPEAKER*] tag, do not read out the tag and generate speech for the "
    "following text, using the specified voice.\n"
    "If no speaker tag is present, select a suitable voice on your own."
)
DEFAULT_SPEAKER_DESCRIPTIONS = ("feminine", "masculine")
MAX_SPEAKERS = 8


@dataclass(frozen=True)
class AudioSource:
    """Where a prompt's audio comes from: a voice file (cached by path), caller samples, or generated codes."""

    path: str | None = None
    samples: np.ndarray | None = field(default=None, compare=False)
    codes: object | None = field(default=None, compare=False)  # LongTensor [frames, codebooks]


def _text(role: str, content: str) -> dict:
    return {"role": role, "content": [{"type": "text", "text": content}]}


def _audio(source: AudioSource) -> dict:
    return {"role": "assistant", "content": [{"type": "audio", "source": source}]}


@dataclass
class PromptPlan:
    system: str
    scene_items: list[dict]  # chat-template content items of the scene message (text and audio)
    context: list[dict]  # reference turns (user transcript, assistant audio) that every chunk keeps
    chunks: list[str]  # normalized text of each generation chunk
    buffer_size: int | None  # how many earlier generated chunks stay in the context (None: all)
    text: str  # the submitted text, as given

    def conversation(self, chunk_index: int, generated: list[object]) -> list[dict]:
        """Messages for chunk `chunk_index`; generated[j] holds the codes produced for chunk j."""
        messages = [_text("system", self.system)]
        if self.scene_items:
            messages.append({"role": "scene", "content": list(self.scene_items)})
        messages.extend(self.context)
        first_kept = 0 if self.buffer_size is None else max(0, chunk_index - self.buffer_size)
        for j in range(first_kept, chunk_index):
            messages.append(_text("user", self.chunks[j]))
            messages.append(_audio(AudioSource(codes=generated[j])))
        messages.append(_text("user", self.chunks[chunk_index]))
        return messages


class PromptPlanner:
    def __init__(self, voices: VoiceLibrary, scenes: SceneLibrary, max_speakers: int = MAX_SPEAKERS):
        self.voices = voices
        self.scenes = scenes
        self.max_speakers = max_speakers

    def plan(self, request: GenerationRequest) -> PromptPlan:
        text = textprep.normalize(request.text or "")
        if not text:
            raise InvalidRequest("text", "text is empty")
        speakers = textprep.speakers_in(text)
        if len(speakers) > self.max_speakers:
            raise InvalidRequest("text", f"at most {self.max_speakers} speakers per request, got {len(speakers)}")
        refs = [r.strip() for r in (request.ref_audio or "").split(",") if r.strip()]
        if len(refs) > max(1, len(speakers)):
            raise InvalidRequest(
                "ref_audio", f"ref_audio names {len(refs)} voices but the text has {len(speakers)} [SPEAKERn] tags"
            )
        if request.ref_clip is not None and refs:
            raise InvalidRequest("ref_audio", "give either ref_audio or an uploaded reference clip, not both")
        scene = self.scenes.resolve(request.scene_prompt)

        scene_items = [{"type": "text", "text": scene}] if scene else []
        context: list[dict] = []
        system = SINGLE_SPEAKER_SYSTEM
        tag_text = False  # single speaker described in the scene: address it as SPEAKER0
        multi = len(speakers) > 1 or len(refs) > 1

        if request.ref_clip is not None:
            clip = AudioSource(samples=request.ref_clip.samples)
            if request.ref_clip.transcript:
                context += [_text("user", textprep.normalize(request.ref_clip.transcript)), _audio(clip)]
            else:
                scene_items += [{"type": "text", "text": "SPEAKER0:"}, {"type": "audio", "source": clip}]
                tag_text = True
        elif multi and not refs:
            system = MULTI_SPEAKER_SYSTEM
            for i, _ in enumerate(speakers):
                description = DEFAULT_SPEAKER_DESCRIPTIONS[i % len(DEFAULT_SPEAKER_DESCRIPTIONS)]
                scene_items.append({"type": "text", "text": f"SPEAKER{i}: {description}"})
        else:
            for i, ref in enumerate(refs):
                prefix = f"[SPEAKER{i}] " if multi else ""
                if ref.startswith(PROFILE_PREFIX):
                    description = self.voices.profile(ref[len(PROFILE_PREFIX) :])
                    scene_items.append({"type": "text", "text": f"SPEAKER{i}: {description}"})
                    tag_text = tag_text or not multi
                    continue
                voice = self.voices.get(ref)
                source = AudioSource(path=str(voice.audio_path))
                if voice.transcript:
                    context += [_text("user", prefix + textprep.normalize(voice.transcript)), _audio(source)]
                else:
                    scene_items += [{"type": "text", "text": f"SPEAKER{i}:"}, {"type": "audio", "source": source}]
                    tag_text = tag_text or not multi

        if tag_text and not speakers:
            text = f"[SPEAKER0] {text}"
        chunks = textprep.chunk_text(
            text, request.chunk_method, request.chunk_max_word_num, request.chunk_max_num_turns
        )
        return PromptPlan(
            system=system,
            scene_items=scene_items,
            context=context,
            chunks=chunks,
            buffer_size=request.generation_chunk_buffer_size,
            text=request.text,
        )
