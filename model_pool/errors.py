"""Failures a caller can cause or meet, as plain exceptions. The HTTP layer maps each to one status code."""

from __future__ import annotations


class HiggsError(Exception):
    """Base class. `message` is safe to show to a client."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidRequest(HiggsError):
    """The request is malformed; `field` names the offending input."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class InvalidAudio(InvalidRequest):
    """An uploaded reference clip cannot be used (not audio, too long, silent...)."""


class UnknownVoice(HiggsError):
    def __init__(self, name: str, field: str = "ref_audio"):
        super().__init__(f"unknown voice '{name}'")
        self.name = name
        self.field = field


class UnknownScene(HiggsError):
    def __init__(self, name: str, field: str = "scene_prompt"):
        super().__init__(f"unknown scene '{name}'")
        self.name = name
        self.field = field


class PoolBusy(HiggsError):
    """No model instance became free within the wait limit."""

    def __init__(self, message: str, retry_after: int = 5):
        super().__init__(message)
        self.retry_after = retry_after


class NotReady(HiggsError):
    """The models are still loading, or failed to load."""

    def __init__(self, message: str, retry_after: int = 10):
        super().__init__(message)
        self.retry_after = retry_after


class ModelLoadError(HiggsError):
    """Loading a checkpoint failed; the message names the path and the cause."""


class Cancelled(HiggsError):
    """The caller asked the generation to stop (for instance, the client went away)."""


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
    """The model produced something unusable for one request (non-finite scores). Not the client's fault."""
