"""Who speaks, from the fields vllm-omni's and sglang-omni's clients send (unchanged), as /v1/audio/speech and
realtime sessions both take them: `task_type`, `voice` (alias `speaker`), `instructions`, `ref_audio` + `ref_text`
(or sglang-omni's `references`) -> the planner's voice, reference clip, described voice and scene.

- CustomVoice (the default without ref_audio): `voice` names the voice (a library voice, an alias, profile:NAME;
  none: a smart voice); `instructions` describe the scene, as OpenAI's field does here.
- VoiceDesign: `instructions` describe the voice ("a warm, deep male voice"): Higgs takes a speaker description in
  its system prompt, so the voice is planned exactly as a profile:NAME of that text; the scene is the default one.
- Base (the default with ref_audio): a clone of `ref_audio` (a data: URI or base64 clip), `ref_text` its transcript
  (without one the clip stands in the scene, as an upload without a transcript does); `instructions` the scene.
With VoiceDesign and Base `voice` is not used: vllm-omni's example client sends its default speaker with every task.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from model_pool.defaults import DEFAULT_SCENE
from model_pool.errors import InvalidRequest
from model_pool.request import ReferenceClip

from ..runtime import runtime
from ..uploads import read_inline_clip
from .voices import resolve_voice

# sglang-omni's reference object names its clip in one of these keys.
REFERENCE_AUDIO_KEYS = ("audio_path", "ref_audio", "audio", "data")


@dataclass(frozen=True)
class Speaker:
    ref_audio: str | None  # the planner's voice name(s)
    clip: ReferenceClip | None
    voice_description: str | None
    scene_prompt: str
    identity: tuple  # what the voice depends on: a realtime session keeps its context while this stays the same


def resolve_speaker(args: dict) -> Speaker:
    """args: the loaded fields (voice, speaker, task_type, instructions, ref_audio, ref_text, references). Every
    inconsistency is an InvalidRequest naming the field as the client sent it."""
    voice = _voice(args.get("voice"), args.get("speaker"))
    clip_value, transcript = _reference(args)
    task = args.get("task_type") or ("Base" if clip_value is not None else "CustomVoice")
    instructions = args.get("instructions")
    scene = instructions if instructions is not None else DEFAULT_SCENE
    if transcript is not None and clip_value is None:
        raise InvalidRequest("ref_text", "ref_text is the transcript of ref_audio: send the clip too (task_type Base)")
    if task == "CustomVoice":
        if clip_value is not None:
            raise InvalidRequest("ref_audio", "ref_audio is a clip to clone: send task_type Base with it (with "
                                              "CustomVoice the voice is the one named in voice)")
        name = resolve_voice(voice)
        return Speaker(name, None, None, scene, (name, None, scene, None, None))
    if task == "VoiceDesign":
        if clip_value is not None:
            raise InvalidRequest("ref_audio", "task_type VoiceDesign describes a voice in instructions; ref_audio "
                                              "clones one: send task_type Base for a clone")
        if not (instructions or "").strip():
            raise InvalidRequest("instructions", "task_type VoiceDesign takes the voice's description in "
                                                 "instructions (for example \"a warm, deep male voice\")")
        return Speaker(None, None, instructions, DEFAULT_SCENE, (None, instructions, DEFAULT_SCENE, None, None))
    if clip_value is None:  # Base
        raise InvalidRequest("ref_audio", "task_type Base clones ref_audio: send the clip as a data: URI or base64 "
                                          "(and its transcript in ref_text)")
    clip = read_inline_clip(clip_value, runtime().settings, transcript)
    digest = hashlib.sha256(clip_value.encode("utf-8")).hexdigest()
    return Speaker(None, clip, None, scene, (None, None, scene, digest, clip.transcript))


def _voice(voice: str | None, speaker: str | None) -> str | None:
    if speaker is not None and voice is not None and speaker != voice:
        raise InvalidRequest("speaker", "speaker is another name for voice: send one of them")
    return voice if voice is not None else speaker


def _reference(args: dict) -> tuple[str | None, str | None]:
    """(the clip, its transcript) from ref_audio / ref_text, or from sglang-omni's one-item `references`."""
    references = args.get("references")
    if not references:
        return args.get("ref_audio"), args.get("ref_text")
    if args.get("ref_audio") is not None or args.get("ref_text") is not None:
        raise InvalidRequest("references", "send ref_audio and ref_text, or references, not both")
    reference = references[0]
    given = [key for key in REFERENCE_AUDIO_KEYS if reference.get(key) is not None]
    if len(given) != 1:
        raise InvalidRequest("references", f"a reference names its clip in one of {', '.join(REFERENCE_AUDIO_KEYS)}")
    return reference[given[0]], reference.get("text")
