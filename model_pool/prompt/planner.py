"""Turn a GenerationRequest into a PromptPlan: the conversation of every mode, as upstream builds it.

Upstream is Boson AI's examples/generation.py; its system message, scene block and reference turns map onto the
hub checkpoint's chat template (system, then a `scene` message, then user / assistant turns) like this:
- smart voice: system "Generate audio following instruction.", the scene description (if any) in the scene block;
- dialogue without voices: the multi-speaker system message; the scene block holds the description (if any), a
  blank line, then one line per speaker tag present in the text, sorted: "SPEAKER1: feminine" ...;
- voices with transcripts: per voice a user turn with the transcript (prefixed "[SPEAKERi] " only when several
  voices are named) and an assistant turn with its audio;
- any profile (or a voice without transcript, or an upload without transcript): every speaker goes into the scene
  block instead, "SPEAKERi: <description>" or "SPEAKERi: <audio>", one per line; a described voice
  (`voice_description`, voice design) is a profile given inline: "SPEAKER0: <description>";
- the text to speak is never changed beyond text preparation (no tag is added).
Upstream sends no system message when a voice is cloned without a scene; the hub template requires one, so the
single-speaker system text stands alone there.

Planning resolves names and reads transcripts and profiles, so an unknown voice or scene fails here, before a
model instance is taken and before any stream starts. Client strings are wrapped in `User` so the prompt encoder
tokenizes them as plain text: whatever they contain, they never become prompt structure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..defaults import MAX_SPEAKERS
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


@dataclass(frozen=True)
class AudioSource:
    """Where a prompt's audio comes from: a voice file (cached by path and file identity), caller samples, or
    codes (generated, or already encoded)."""

    path: str | None = None
    voice: str | None = None  # the voice's name, for a clear error if its file disappears
    samples: np.ndarray | None = field(default=None, compare=False)
    codes: object | None = field(default=None, compare=False)  # LongTensor [frames, codebooks]


@dataclass(frozen=True)
class User:
    """A client-controlled string: data, never prompt structure."""

    text: str


@dataclass(frozen=True)
class Audio:
    source: AudioSource


Part = str | User | Audio  # a plain str is ours (template text)


@dataclass
class Turn:
    role: str  # system | scene | user | assistant
    items: list[list[Part]]  # text items, each a list of parts; an assistant turn holds one [Audio]


def _user(*parts: Part) -> Turn:
    return Turn("user", [list(parts)])


def _assistant(source: AudioSource) -> Turn:
    return Turn("assistant", [[Audio(source)]])


def _lines(lines: list[list[Part]]) -> list[Part]:
    joined: list[Part] = []
    for i, line in enumerate(lines):
        joined += (["\n"] if i else []) + line
    return joined


@dataclass
class PromptPlan:
    system: str
    scene: list[list[Part]]  # the scene message's text items: the description, then the speaker lines
    context: list[Turn]  # reference turns (user transcript, assistant audio) that every chunk keeps
    chunks: list[str]  # prepared text of each generation chunk
    buffer_size: int | None  # how many earlier generated chunks stay in the context (None: all)

    def conversation(self, chunk_index: int, generated: list[object], dropped: int = 0) -> list[Turn]:
        """Turns for chunk `chunk_index`; generated[j] holds the codes produced for chunk j. `dropped` more of the
        oldest generated chunks leave the context (when the prompt would not fit otherwise)."""
        turns = [Turn("system", [[self.system]])]
        if self.scene:
            turns.append(Turn("scene", self.scene))
        turns += self.context
        first = 0 if self.buffer_size is None else max(0, chunk_index - self.buffer_size)
        for j in range(min(chunk_index, first + dropped), chunk_index):
            turns += [_user(User(self.chunks[j])), _assistant(AudioSource(codes=generated[j]))]
        turns.append(_user(User(self.chunks[chunk_index])))
        return turns

    def sources(self) -> list[AudioSource]:
        """Every reference clip of the plan (the same in every chunk's prompt)."""
        items = [item for turn in [Turn("scene", self.scene), *self.context] for item in turn.items]
        return [part.source for item in items for part in item if isinstance(part, Audio)]

    def with_codes(self, codes: dict[int, object]) -> PromptPlan:
        """The same plan with the reference clips at these positions (of sources()) replaced by their codes."""
        position = iter(range(len(self.sources())))

        def swap(part: Part) -> Part:
            if isinstance(part, Audio):
                i = next(position)
                return Audio(AudioSource(codes=codes[i])) if i in codes else part
            return part

        scene = [[swap(p) for p in item] for item in self.scene]
        context = [Turn(t.role, [[swap(p) for p in item] for item in t.items]) for t in self.context]
        return PromptPlan(self.system, scene, context, self.chunks, self.buffer_size)


class PromptPlanner:
    def __init__(self, voices: VoiceLibrary, scenes: SceneLibrary, max_speakers: int = MAX_SPEAKERS):
        self.voices = voices
        self.scenes = scenes
        self.max_speakers = max_speakers

    def plan(self, request: GenerationRequest) -> PromptPlan:
        name = request.name
        text = textprep.normalize(request.text or "")
        if not text:
            raise InvalidRequest(name("text"), f"{name('text')} is empty")
        tags = textprep.speaker_tags(request.text)
        if len(tags) > self.max_speakers:
            raise InvalidRequest(name("text"), f"at most {self.max_speakers} speakers per request, got {len(tags)}")
        refs = [r.strip() for r in (request.ref_audio or "").split(",") if r.strip()]
        if len(refs) > max(1, len(tags)):
            raise InvalidRequest(name("ref_audio"), f"{name('ref_audio')} names {len(refs)} voices but the text has "
                                                    f"{len(tags)} [SPEAKERn] tags")
        if request.ref_clip is not None and refs:
            raise InvalidRequest(name("ref_audio"), "give either a named voice or an uploaded reference clip, "
                                                    "not both")
        description = " ".join((request.voice_description or "").split())  # as a profile's text is read
        if request.voice_description is not None and not description:
            raise InvalidRequest(name("voice_description"), f"{name('voice_description')} describes the voice: it "
                                                            "must not be empty")
        if description and (refs or request.ref_clip is not None):
            raise InvalidRequest(name("voice_description"), "a described voice is the voice: give no named voice or "
                                                            "reference clip with it")
        scene = self.scenes.resolve(request.scene_prompt, name("scene_prompt"))

        system = SINGLE_SPEAKER_SYSTEM
        speakers: list[list[Part]] = []  # scene lines: "SPEAKERi: description" or "SPEAKERi: <audio>"
        context: list[Turn] = []
        if description:  # a designed voice is a profile given inline: "SPEAKER0: <description>" in the scene
            speakers.append(["SPEAKER0: ", User(description)])
        elif request.ref_clip is not None:
            clip = AudioSource(samples=request.ref_clip.samples)
            transcript = (request.ref_clip.transcript or "").strip()
            if transcript:
                context += [_user(User(transcript)), _assistant(clip)]
            else:
                speakers.append(["SPEAKER0: ", Audio(clip)])
        elif refs:
            voices = {ref: self.voices.get(ref, name("ref_audio")) for ref in refs
                      if not ref.startswith(PROFILE_PREFIX)}
            in_scene = len(voices) < len(refs) or any(not v.transcript for v in voices.values())
            for i, ref in enumerate(refs):
                if ref not in voices:
                    description = self.voices.profile(ref[len(PROFILE_PREFIX):], name("ref_audio"))
                    speakers.append([f"SPEAKER{i}: ", User(description)])
                    continue
                voice = voices[ref]
                source = AudioSource(path=str(voice.audio_path), voice=voice.name)
                if in_scene:
                    speakers.append([f"SPEAKER{i}: ", Audio(source)])
                else:
                    prefix = f"[SPEAKER{i}] " if len(refs) > 1 else ""
                    context += [_user(prefix, User(voice.transcript)), _assistant(source)]
        elif len(tags) > 1:
            system = MULTI_SPEAKER_SYSTEM
            for i, tag in enumerate(tags):
                speakers.append([f"{tag}: {DEFAULT_SPEAKER_DESCRIPTIONS[i % len(DEFAULT_SPEAKER_DESCRIPTIONS)]}"])

        items = ([[User(scene)]] if scene else []) + ([_lines(speakers)] if speakers else [])
        chunks = textprep.chunk_text(text, request.chunk_method, request.chunk_max_word_num,
                                     request.chunk_max_num_turns)
        return PromptPlan(system, items, context, chunks, request.generation_chunk_buffer_size)
