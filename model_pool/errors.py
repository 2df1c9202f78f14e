"""Failures a caller can cause or meet, as plain exceptions.

Each type carries the HTTP status it maps to (`http_status`) and, where waiting helps, a `retry_after` in seconds,
as class attributes found along the class hierarchy: a subclass answers like its parent unless it says otherwise.
They are plain numbers (model_pool knows no HTTP framework); app/errors.py turns them into responses in one place.
"""

from __future__ import annotations


class HiggsError(Exception):
    """Base class. `message` is safe to show to a client."""

    http_status = 500
    retry_after: int | None = None

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidRequest(HiggsError):
    """The request is malformed; `field` names the offending input."""

    http_status = 400

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class InvalidAudio(InvalidRequest):
    """An uploaded reference clip cannot be used (not audio, too long, silent...)."""


class UnknownVoice(HiggsError):
    http_status = 404

    def __init__(self, name: str, field: str = "ref_audio", message: str | None = None):
        super().__init__(message or f"unknown voice '{name}'")
        self.name = name
        self.field = field


class UnknownScene(HiggsError):
    http_status = 404

    def __init__(self, name: str, field: str = "scene_prompt"):
        super().__init__(f"unknown scene '{name}'")
        self.name = name
        self.field = field


class PoolBusy(HiggsError):
    """No place in the pool now, or no model instance became free within the wait limit."""

    http_status = 503
    retry_after = 5


class NotReady(HiggsError):
    """The models are still loading."""

    http_status = 503
    retry_after = 10


class LoadFailed(NotReady):
    """The models failed to load: no retry will help until an operator fixes the cause (no Retry-After)."""

    retry_after = None


class ModelLoadError(HiggsError):
    """Loading a checkpoint failed; the message names the path and the cause."""


class Cancelled(HiggsError):
    """The caller asked the generation to stop (for instance, the client went away). Logged only: the client that
    could read the answer is gone."""

    http_status = 499


class ContextTooLong(InvalidRequest):
    """A prompt plus its max_new_tokens would not fit one row's KV cache."""

    def __init__(self, prompt_tokens: int, max_new_tokens: int, context_tokens: int, field: str = "text"):
        super().__init__(
            field,
            f"the prompt is {prompt_tokens} tokens; with max_new_tokens {max_new_tokens} it exceeds the server's "
            f"context of {context_tokens} tokens: shorten the text, use chunk_method, or lower max_new_tokens",
        )
        self.prompt_tokens = prompt_tokens


class GenerationFailed(HiggsError):
    """The model produced something unusable for one request (non-finite scores). Not the client's fault; the
    message is safe to show."""


class StorageError(HiggsError):
    """The voice library cannot be written; reads and generation go on. `path` is for the log, not the client."""

    def __init__(self, message: str, path: str):
        super().__init__(message)
        self.path = path


class StorageFull(StorageError):
    """No space left on the library's filesystem (or its quota is spent)."""

    http_status = 507


class StorageReadOnly(StorageError):
    """The library's filesystem is mounted read-only."""

    http_status = 503


class StorageForbidden(StorageError):
    """The server's user may not write the library's directory."""

    http_status = 403
