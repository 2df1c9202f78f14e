"""Named voices, voice profiles and scenes, read from configured directories.

Names are checked before any file is touched: letters, digits, '_' and '-', at most 64 characters, the whole
string. Resolved paths (symlinks followed) must stay inside the configured directory. Directories are read on every
call, so a voice added by another worker or host sharing the directory is seen without a restart. Listings name
files as the operator configured the directory (its path as written, plus the file name), never a resolved path.
"""

from __future__ import annotations

import difflib
import errno
import fcntl
import io
import json
import logging
import os
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

from ..errors import (
    HiggsError,
    InvalidRequest,
    StorageForbidden,
    StorageFull,
    StorageReadOnly,
    UnknownScene,
    UnknownVoice,
)

log = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")  # always with fullmatch: "name\n" is not a name
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")
PROFILE_FILE = "profile.yaml"
PROFILE_PREFIX = "profile:"
META_SUFFIX = ".json"  # NAME.json: what the voice is ({"synthetic": true, "source": "..."})
# One word that looks like a path is a mistaken (or hostile) name, not a scene description.
_PATH_LIKE = re.compile(r"[/\\]|^\.|%2e|%2f|%5c", re.IGNORECASE)


def is_name(value: str) -> bool:
    return isinstance(value, str) and NAME_PATTERN.fullmatch(value) is not None


def check_name(name: str, field: str) -> str:
    if not is_name(name):
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


def _read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace").strip()


def closest(name: str, known: list[str]) -> list[str]:
    """The known names a typo of `name` most likely meant (at most 3, case ignored)."""
    by_lower = {k.lower(): k for k in known}
    return [by_lower[c] for c in difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.6)]


def _unknown(what: str, name: str, known: list[str], prefix: str = "") -> str:
    """'unknown voice 'bellinda' (closest: belinda)': a typo's fix at a glance, without listing a whole library."""
    close = closest(name, known)
    hint = f" (closest: {', '.join(prefix + c for c in close)})" if close else ""
    return f"unknown {what}{hint}"


@dataclass(frozen=True)
class Voice:
    name: str
    audio_path: Path
    transcript: str | None


class VoiceExists(HiggsError):
    http_status = 409

    def __init__(self, name: str):
        super().__init__(f"voice '{name}' already exists (pass overwrite=true to replace it)")
        self.name = name


@contextmanager
def _staged(path: Path):
    """A temporary file beside path (same filesystem, so the final rename is atomic); removed unless renamed.
    Mode 0644 like the files beside it (mkstemp makes 0600)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o644)
    os.close(fd)
    try:
        yield tmp
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _fsync(path: str) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


class _Directory:
    def __init__(self, directory: str | Path):
        self.configured = str(directory)  # as written by the operator: listings show it unchanged
        self.directory = Path(directory)

    def _shown(self, filename: str) -> str:
        return os.path.join(self.configured, filename)


class VoiceLibrary(_Directory):
    @contextmanager
    def _writable(self):
        """A write the filesystem refuses becomes the error an operator can act on (the files are safe either way:
        staged files are removed, an overwritten voice keeps its old files)."""
        try:
            yield
        except OSError as exc:
            where = str(exc.filename or self.directory)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull("the voice library's disk is full: the voice was not stored", where) from exc
            if exc.errno == errno.EROFS:
                raise StorageReadOnly("the voice library is read-only on this server: voices can be used but not "
                                      "added or deleted", where) from exc
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise StorageForbidden("the server may not write to the voice library's directory", where) from exc
            raise

    @contextmanager
    def _locked(self):
        """One writer at a time in the directory, across threads, workers and hosts sharing it: a lock on the
        directory itself, so no lock files are left behind."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def save(self, name: str, samples: np.ndarray, sample_rate: int, transcript: str, overwrite: bool = False) -> dict:
        """Store NAME.wav (16-bit mono) + NAME.txt. Both are written and synced to temporary files first, then
        renamed into place (transcript first: a new voice is listed only once its audio is there). A failure while
        writing leaves the old voice untouched; readers never see a partly written file. A stored voice is a
        recording someone sent, so an earlier NAME.json (synthetic) goes."""
        check_name(name, "name")
        text_path, audio_path = self.directory / f"{name}.txt", self.directory / f"{name}.wav"
        with self._writable(), self._locked():
            if not overwrite and any((self.directory / f"{name}{s}").exists() for s in AUDIO_SUFFIXES):
                raise VoiceExists(name)
            with _staged(text_path) as text_tmp, _staged(audio_path) as audio_tmp:
                Path(text_tmp).write_text(transcript.strip() + "\n", encoding="utf-8")
                encoded = io.BytesIO()  # encoded in memory: a full disk then fails as OSError (ENOSPC) below
                sf.write(encoded, samples, sample_rate, subtype="PCM_16", format="WAV")
                Path(audio_tmp).write_bytes(encoded.getvalue())
                _fsync(text_tmp)
                _fsync(audio_tmp)
                os.replace(text_tmp, text_path)
                os.replace(audio_tmp, audio_path)
            for suffix in (*AUDIO_SUFFIXES[1:], META_SUFFIX):  # an older file of the same name would shadow it
                (self.directory / f"{name}{suffix}").unlink(missing_ok=True)
        return self._entry(name, ".wav")

    def delete(self, name: str) -> None:
        voice = self.get(name, field="name")
        with self._writable(), self._locked():
            voice.audio_path.unlink(missing_ok=True)  # audio first: the voice disappears from listings at once
            for suffix in (".txt", META_SUFFIX):
                (self.directory / f"{name}{suffix}").unlink(missing_ok=True)

    def _meta(self, name: str) -> dict:
        path = _inside(self.directory, self.directory / f"{name}{META_SUFFIX}")
        if not path:
            return {}
        try:
            meta = json.loads(_read_text(path))
            return meta if isinstance(meta, dict) else {}
        except ValueError:
            log.warning("ignoring %s: not a JSON object", path.name)
            return {}

    def _entry(self, name: str, suffix: str) -> dict:
        meta = self._meta(name)
        entry = {"name": name, "file": self._shown(f"{name}{suffix}"), "type": suffix[1:].lower(),
                 "synthetic": bool(meta.get("synthetic", False))}
        if meta.get("source"):
            entry["source"] = str(meta["source"])
        return entry

    def list(self) -> list[dict]:
        voices = []
        if self.directory.is_dir():
            for path in sorted(self.directory.iterdir()):
                if path.suffix.lower() in AUDIO_SUFFIXES and is_name(path.stem) and _inside(self.directory, path):
                    voices.append(self._entry(path.stem, path.suffix))
        return voices

    def get(self, name: str, field: str = "ref_audio") -> Voice:
        check_name(name, field)
        for suffix in AUDIO_SUFFIXES:
            audio = _inside(self.directory, self.directory / f"{name}{suffix}")
            if audio:
                text = _inside(self.directory, self.directory / f"{name}.txt")
                return Voice(name, audio, (_read_text(text) if text else "") or None)
        raise UnknownVoice(name, field, _unknown(f"voice '{name}'", name, [v["name"] for v in self.list()]))

    def profiles(self) -> dict[str, str]:
        path = _inside(self.directory, self.directory / PROFILE_FILE)
        if not path:
            return {}
        try:
            data = yaml.safe_load(_read_text(path)) or {}
        except yaml.YAMLError as exc:
            log.warning("ignoring %s: %s", path.name, str(exc).splitlines()[0])
            return {}
        profiles = data.get("profiles", data) if isinstance(data, dict) else {}
        return {str(k): " ".join(str(v).split()) for k, v in (profiles or {}).items()}

    def profile(self, name: str, field: str = "ref_audio") -> str:
        check_name(name, field)
        profiles = self.profiles()
        if name not in profiles:
            raise UnknownVoice(f"{PROFILE_PREFIX}{name}", field,
                               _unknown(f"voice '{PROFILE_PREFIX}{name}'", name, list(profiles), PROFILE_PREFIX))
        return profiles[name]


class SceneLibrary(_Directory):
    def list(self) -> list[dict]:
        scenes = []
        if self.directory.is_dir():
            for path in sorted(self.directory.glob("*.txt")):
                if is_name(path.stem) and _inside(self.directory, path):
                    scenes.append({"name": path.stem, "content": _read_text(path), "file": self._shown(path.name)})
        return scenes

    def get(self, name: str, field: str = "scene_prompt") -> str:
        check_name(name, field)
        path = _inside(self.directory, self.directory / f"{name}.txt")
        if not path:
            raise UnknownScene(name, field)
        return _read_text(path)

    def resolve(self, value: str | None, field: str = "scene_prompt") -> str:
        """A scene name is looked up; anything with spaces or punctuation is free text; empty means none."""
        value = (value or "").strip()
        if not value:
            return ""
        if is_name(value):
            return self.get(value, field)
        if _PATH_LIKE.search(value) and not any(c.isspace() for c in value):
            raise InvalidRequest(field, f"invalid {field} {value!r}: a scene name uses 1-64 letters, digits, '_' or "
                                        "'-'; a description needs words")
        return value
