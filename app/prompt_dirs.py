"""Where the voice and scene directories are, whichever directory the server was started from.

The spec's defaults (examples/voice_prompts, examples/scene_prompts) are relative paths: they are looked up in the
working directory and, when it has none, in the project's directory, so `cd /srv && python
/opt/higgs-audio-server/api_server.py` still finds the shipped voices. A directory given explicitly is used as
given (relative to the working directory); one that does not exist is warned about, never silently empty. The log
says which directories are used and what each holds.
"""

from __future__ import annotations

import logging
from dataclasses import fields
from pathlib import Path

from model_pool.prompt.library import SceneLibrary, VoiceLibrary

from .settings import Settings

log = logging.getLogger("higgs.runtime")

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULTS = {f.name: f.default for f in fields(Settings)}


def locate(setting: str, configured: str) -> str:
    """The directory to read for a setting (voice_prompts_dir or scene_prompts_dir): as configured when it exists
    or was given explicitly; the default, missing from the working directory, in the project's directory."""
    if Path(configured).is_dir() or configured != DEFAULTS[setting]:
        return configured
    shipped = PROJECT_DIR / configured
    return str(shipped) if shipped.is_dir() else configured


def open_libraries(settings: Settings) -> tuple[VoiceLibrary, SceneLibrary]:
    """The voice and scene libraries of these settings, their directories located and logged."""
    voices = VoiceLibrary(locate("voice_prompts_dir", settings.voice_prompts_dir))
    scenes = SceneLibrary(locate("scene_prompts_dir", settings.scene_prompts_dir))
    _report("voice_prompts_dir", voices, "voices",
            lambda: f"{len(voices.list())} (and {len(voices.profiles())} profiles)")
    _report("scene_prompts_dir", scenes, "scenes", lambda: f"{len(scenes.list())}")
    return voices, scenes


def _report(setting: str, library: VoiceLibrary | SceneLibrary, what: str, holds) -> None:
    where = library.directory.absolute()
    if library.directory.is_dir():
        log.info("%s from %s: %s", what, where, holds())
    elif library.configured != DEFAULTS[setting]:
        created = "; POST /voices creates it" if what == "voices" else ""
        log.warning("%s: %s (--%s) does not exist: no %s until it does%s", what, where,
                    setting.replace("_", "-"), what, created)
    else:
        log.warning("%s: neither %s nor %s exists: no %s", what, where, PROJECT_DIR / library.configured, what)
