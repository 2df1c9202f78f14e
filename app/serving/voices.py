"""A `voice` as OpenAI-style clients send it (/v1/audio/speech, realtime sessions) -> the planner's ref_audio.

In order: an alias (--voice-aliases: "alloy=belinda") clones its library voice exactly as that name does; a library
voice is itself; one of OpenAI's built-in names, or sglang-omni's "default", that is neither means the smart voice
(no reference); any other name passes through for the planner to read and check once (profile:NAME, comma lists,
unknown names).
"""

from __future__ import annotations

import logging

from model_pool.errors import InvalidRequest, UnknownVoice
from model_pool.prompt.library import closest, is_name

from ..runtime import runtime

log = logging.getLogger("higgs.voices")

OPENAI_VOICES = frozenset({"alloy", "ash", "ballad", "cedar", "coral", "echo", "fable", "marin", "nova", "onyx",
                           "sage", "shimmer", "verse"})
SERVER_DEFAULT_VOICE = "default"  # sglang-omni's voice when a client names none
_LISTED = 8  # library voices an unknown name's error lists when none is close


def resolve_voice(name: str | None, field: str = "voice") -> str | None:
    rt = runtime()
    if name is None:
        return None
    target = rt.settings.aliases.get(name)
    if target is not None:
        if not _in_library(rt.voices, target):  # voices come and go while the server runs: checked at each use
            raise UnknownVoice(name, field, f"voice '{name}' is an alias of '{target}', which is not in the voice "
                                            f"library ({rt.voices.configured})")
        return target
    smart = name.lower() in OPENAI_VOICES or name.lower() == SERVER_DEFAULT_VOICE
    if not smart or _in_library(rt.voices, name):
        return name
    log.info("voice %s is an OpenAI or default voice this server does not have: using the smart voice", name)
    return None


def voice_hint(error: UnknownVoice) -> UnknownVoice:
    """An unknown voice no library name is close to (a client's default speaker, say vllm-omni's "Vivian") names
    some voices this server has, and where to list them all; a near miss already names the closest."""
    if not is_name(error.name):  # profile:NAME (the profiles' own near misses) or a comma list
        return error
    voices = [v["name"] for v in runtime().voices.list()]
    if closest(error.name, voices):
        return error
    shown = ", ".join(voices[:_LISTED]) + (", ..." if len(voices) > _LISTED else "")
    have = f"this server's voices: {shown} (GET /v1/audio/voices lists them all)" if voices else \
        "this server's voice library is empty"
    return UnknownVoice(error.name, error.field, f"{error.message}; {have}; or leave the voice out for a smart "
                                                 "voice")


def _in_library(voices, name: str) -> bool:
    try:
        voices.get(name)
        return True
    except (UnknownVoice, InvalidRequest):
        return False


def aliases_listing() -> list[dict]:
    """The aliases as /v1/audio/voices lists them."""
    return [{"id": alias, "object": "voice", "name": alias, "type": "alias", "voice": voice}
            for alias, voice in runtime().settings.aliases.items()]
