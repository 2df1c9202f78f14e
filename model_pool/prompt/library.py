"""Named voices, voice profiles and scenes, read from configured directories.

Names are checked before any file is touched: letters, digits, '_' and '-', at most 64 characters. Resolved paths
(symlinks followed) must stay inside the configured directory. Directories are read on every call, so a voice
added by another worker or host sharing the directory is seen without a restart.
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

from ..errors import HiggsError, InvalidRequest, UnknownScene, UnknownVoice

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")
PROFILE_FILE = "profile.yaml"
PROFILE_PREFIX = "profile:"
# One word that looks like a path is a mistaken (or hostile) name, not a scene description.
_PATH_LIKE = re.compile(r"[/\\]|^\.|%2e|%2f|%5c", re.IGNORECASE)


def check_name(name: str, field: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise InvalidRequest(field, f"invalid name {name!r}: use 1-64 letters, digits, '_' or '-'")
    return name


def _inside(directory: Path, path: Path) -> Path | None:
    """The resolved path if it is a regular file inside directory (after following links), else None."""
    try:
        resolved = path.resolve(strict=True)
        root = directory.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not resolved.is_file() or not resolved.is_relative_to(root):
        return None
    return resolved


@dataclass(frozen=True)
class Voice:
    name: str
    audio_path: Path
    transcript: str | None


class VoiceExists(HiggsError):
    def __init__(self, name: str):
        super().__init__(f"voice '{name}' already exists (pass overwrite=true to replace it)")
        self.name = name


@contextmanager
def _staged(path: Path):
    """A temporary file beside path (same filesystem, so the final rename is atomic); removed unless renamed."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _fsync(path: str) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


class VoiceLibrary:
    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    @contextmanager
    def _locked(self, name: str):
        """One writer per voice name at a time, across threads, workers and hosts sharing the directory."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / f".{name}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def save(self, name: str, samples: np.ndarray, sample_rate: int, transcript: str, overwrite: bool = False) -> dict:
        """Store NAME.wav (16-bit mono) + NAME.txt. Both are written and synced to temporary files first, then
        renamed into place (transcript first: a new voice is listed only once its audio is there). A failure while
        writing leaves the old voice untouched; readers never see a partly written file."""
        check_name(name, "name")
        text_path, audio_path = self.directory / f"{name}.txt", self.directory / f"{name}.wav"
        with self._locked(name):
            if not overwrite and any((self.directory / f"{name}{s}").exists() for s in AUDIO_SUFFIXES):
                raise VoiceExists(name)
            with _staged(text_path) as text_tmp, _staged(audio_path) as audio_tmp:
                Path(text_tmp).write_text(transcript.strip() + "\n", encoding="utf-8")
                sf.write(audio_tmp, samples, sample_rate, subtype="PCM_16", format="WAV")
                _fsync(text_tmp)
                _fsync(audio_tmp)
                os.replace(text_tmp, text_path)
                os.replace(audio_tmp, audio_path)
            for suffix in AUDIO_SUFFIXES[1:]:  # an older voice of the same name in another format would shadow it
                (self.directory / f"{name}{suffix}").unlink(missing_ok=True)
        return {"name": name, "file": str(self.directory / f"{name}.wav"), "type": "wav"}

    def delete(self, name: str) -> None:
        voice = self.get(name, field="name")
        with self._locked(name):
            voice.audio_path.unlink(missing_ok=True)  # audio first: the voice disappears from listings at once
            (self.directory / f"{name}.txt").unlink(missing_ok=True)

    def list(self) -> list[dict]:
        voices = []
        if self.directory.is_dir():
            for path in sorted(self.directory.iterdir()):
                if (
                    path.suffix.lower() in AUDIO_SUFFIXES
                    and NAME_PATTERN.match(path.stem)
                    and _inside(self.directory, path)
                ):
                    voices.append(
                        {"name": path.stem, "file": str(self.directory / path.name), "type": path.suffix[1:].lower()}
                    )
        return voices

    def get(self, name: str, field: str = "ref_audio") -> Voice:
        check_name(name, field)
        for suffix in AUDIO_SUFFIXES:
            audio = _inside(self.directory, self.directory / f"{name}{suffix}")
            if audio:
                text = _inside(self.directory, self.directory / f"{name}.txt")
                transcript = text.read_text(encoding="utf-8").strip() if text else None
                return Voice(name, audio, transcript or None)
        raise UnknownVoice(name, field)

    def profiles(self) -> dict[str, str]:
        path = _inside(self.directory, self.directory / PROFILE_FILE)
        if not path:
            return {}
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        profiles = data.get("profiles", data) if isinstance(data, dict) else {}
        return {str(k): " ".join(str(v).split()) for k, v in profiles.items()}

    def profile(self, name: str, field: str = "ref_audio") -> str:
        check_name(name, field)
        profiles = self.profiles()
        if name not in profiles:
            raise UnknownVoice(f"{PROFILE_PREFIX}{name}", field)
        return profiles[name]


class SceneLibrary:
    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def list(self) -> list[dict]:
        scenes = []
        if self.directory.is_dir():
            for path in sorted(self.directory.glob("*.txt")):
                if NAME_PATTERN.match(path.stem) and _inside(self.directory, path):
                    content = path.read_text(encoding="utf-8").strip()
                    scenes.append({"name": path.stem, "content": content, "file": str(self.directory / path.name)})
        return scenes

    def get(self, name: str, field: str = "scene_prompt") -> str:
        check_name(name, field)
        path = _inside(self.directory, self.directory / f"{name}.txt")
        if not path:
            raise UnknownScene(name, field)
        return path.read_text(encoding="utf-8").strip()

    def resolve(self, value: str | None, field: str = "scene_prompt") -> str:
        """A scene name is looked up; anything with spaces or punctuation is free text; empty means none."""
        value = (value or "").strip()
        if not value:
            return ""
        if NAME_PATTERN.match(value):
            return self.get(value, field)
        if _PATH_LIKE.search(value) and not any(c.isspace() for c in value):
            raise InvalidRequest(field, f"invalid scene name {value!r}: use 1-64 letters, digits, '_' or '-'")
        return value
