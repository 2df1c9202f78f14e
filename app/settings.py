"""Server settings: defaults, overridden by HIGGS_* environment variables, overridden by a mapping.

The command line (api_server.py) sets the HIGGS_* variables; systemd sets them with Environment=; tests pass a
mapping to create_app.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, fields

from model_pool.defaults import (
    DEFAULT_AUDIO_TOKENIZER,
    DEFAULT_MAX_CONTEXT_TOKENS,
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_MAX_REQUEST_STEPS,
    DEFAULT_MAX_TEXT_CHARS,
    DEFAULT_MODEL,
    DEFAULT_PREFILL_CHUNK,
    DEFAULT_QUEUE_TIMEOUT,
    DEFAULT_RUNAWAY_REPETITION_S,
    DEFAULT_RUNAWAY_SILENCE_DB,
    DEFAULT_RUNAWAY_SILENCE_S,
    DEFAULT_RUNAWAY_TEXT_BUDGET,
    MAX_REFERENCE_SECONDS,
    MAX_SPEAKERS,
    QUANTIZATIONS,
)
from model_pool.guard import GuardSettings

ENV_PREFIX = "HIGGS_"
# HIGGS_* variables that are not settings but are known (not misspelt): what reads them.
OTHER_VARIABLES = {"HIGGS_TEST_DEVICE": "the device the engine tests run on (make gpu-check)",
                   "HIGGS_TEST_DTYPE": "the tiny model's dtype in the tests (bfloat16 rehearses a GPU's numerics)"}


@dataclass
class Settings:
    host: str = "0.0.0.0"
    port: int = 8000
    model_path: str = DEFAULT_MODEL
    audio_tokenizer_path: str = DEFAULT_AUDIO_TOKENIZER
    device: str = "auto"
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    voice_prompts_dir: str = "examples/voice_prompts"
    scene_prompts_dir: str = "examples/scene_prompts"
    instances_per_device: int = 1
    cpu_threads: int = 0  # torch threads per instance on CPU; 0: the cores, less one, split between instances
    # Requests one instance decodes together: 0, as many as the memory plan fits (at most 64 on a GPU, 8 elsewhere:
    # defaults.AUTO_MAX_SLOTS); N, at most N; 1 turns batching off.
    max_batch_size: int = 0
    max_context_tokens: int = DEFAULT_MAX_CONTEXT_TOKENS  # a request's prompt + max_new_tokens (KV cache per slot)
    prefill_chunk: int = DEFAULT_PREFILL_CHUNK  # prompt tokens prefilled between decode steps; 0: whole prompts
    compile: str = "auto"  # torch.compile of the decode step (CUDA graphs on GPUs): auto = on for CUDA, off for CPU
    quantization: str = "none"  # the backbone's linear weights: none, int8, fp8 (GPUs), int4 (GPUs)
    workers: int = 1
    threads: int = 0  # 0: enough for the pool plus health checks (see gunicorn.conf.py)
    queue_timeout: float = DEFAULT_QUEUE_TIMEOUT  # seconds a request waits for a free model instance
    max_queue: int = 0  # requests allowed to wait; 0: twice the pool size
    max_upload_mb: float = 20.0
    max_upload_seconds: float = MAX_REFERENCE_SECONDS
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS
    max_speakers: int = MAX_SPEAKERS
    max_request_steps: int = DEFAULT_MAX_REQUEST_STEPS  # chunks x max_new_tokens per request
    max_body_kb: int = 1024  # JSON request bodies
    max_form_parts: int = 50
    api_key: str = ""  # empty: no authentication
    ping_interval: float = 5.0  # seconds between SSE keep-alive comments
    client_timeout: float = 30.0  # seconds a read or write of a client's socket may make no progress
    cors_origins: str = "*"
    log_file: str = "api_server.log"
    log_level: str = "INFO"
    load_in_background: bool = True  # answer (503 + Retry-After) while the model loads; off: load before serving
    graceful_timeout: int = 300  # seconds gunicorn lets in-flight streams finish on stop
    max_sessions: int = 32  # realtime WebSocket sessions per worker; more are refused (503) before the handshake
    session_idle_timeout: float = 120.0  # seconds a realtime session may send nothing before it is closed
    max_message_kb: int = 128  # one realtime client message (vllm-omni's limit for text)
    max_config_message_kb: int = 4096  # one realtime session.config, which may carry a clip (ref_audio)
    allow_ref_audio_urls: bool = False  # fetch a ref_audio given as an http(s) URL (the server makes the request)
    voice_aliases: str = ""  # "alloy=belinda,echo=en_man": names (OpenAI's, say) that clone a library voice
    forwarded_allow_ips: str = "127.0.0.1,::1"  # proxies whose X-Forwarded-* headers gunicorn trusts
    # The runaway guard (docs/operations.md, Runaway guard): a generation that stopped speaking ends. 0 turns one
    # detector off; runaway_guard off turns them all off (a request can too: "runaway_guard": false).
    runaway_guard: bool = True
    runaway_repetition_s: float = DEFAULT_RUNAWAY_REPETITION_S  # the same frame or a short cycle this long
    runaway_silence_s: float = DEFAULT_RUNAWAY_SILENCE_S  # silence after speech this long
    runaway_silence_db: float = DEFAULT_RUNAWAY_SILENCE_DB  # below this level (dBFS, RMS of 40 ms) is silence
    runaway_text_budget: float = DEFAULT_RUNAWAY_TEXT_BUDGET  # audio per chunk: this multiple of the text's length

    def __post_init__(self):
        parse_aliases(self.voice_aliases)  # refuse a malformed list at start-up, not at the first request
        try:
            self.guard  # noqa: B018 - the runaway guard's settings are checked at start-up too
        except ValueError as exc:
            raise SystemExit(f"invalid runaway guard setting ({ENV_PREFIX}RUNAWAY_*): {exc}") from None
        mode = str(self.compile).strip().lower()
        aliases = {"1": "on", "true": "on", "yes": "on", "0": "off", "false": "off", "no": "off"}
        self.compile = aliases.get(mode, mode)
        if self.compile not in ("auto", "on", "off"):
            raise SystemExit(f"invalid value for {ENV_PREFIX}COMPILE: {mode!r} (expected auto, on or off)")
        quantization = str(self.quantization).strip().lower()
        self.quantization = "none" if quantization in ("", "off") else quantization
        if self.quantization not in QUANTIZATIONS:
            raise SystemExit(f"invalid value for {ENV_PREFIX}QUANTIZATION: {quantization!r} (expected "
                             f"{', '.join(QUANTIZATIONS)})")
        if self.max_batch_size < 0:
            raise SystemExit(f"invalid value for {ENV_PREFIX}MAX_BATCH_SIZE: {self.max_batch_size} (expected 0, as "
                             "many as fit, or a number of slots)")

    @classmethod
    def from_env(cls, environ=None, overrides: dict | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _parse(f.type, raw, f.name)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides or {}) - known)
        if unknown:  # a misspelt override would quietly test the defaults
            raise TypeError(f"unknown setting(s): {', '.join(unknown)}")
        values.update(overrides or {})
        return cls(**values)

    @classmethod
    def unknown_variables(cls, environ=None) -> list[tuple[str, str | None]]:
        """HIGGS_* variables in the environment that no setting reads (typos), each with the closest known name."""
        environ = os.environ if environ is None else environ
        known = [ENV_PREFIX + f.name.upper() for f in fields(cls)] + list(OTHER_VARIABLES)
        suffixes = {name[len(ENV_PREFIX):]: name for name in known}  # the shared prefix would make all alike

        def closest(name: str) -> str | None:
            match = difflib.get_close_matches(name[len(ENV_PREFIX):], list(suffixes), n=1, cutoff=0.75)
            return suffixes[match[0]] if match else None

        return [(name, closest(name)) for name in sorted(environ) if name.startswith(ENV_PREFIX) and name not in known]

    def environ(self) -> dict[str, str]:
        """The HIGGS_* variables that reproduce these settings (api_server.py hands them to gunicorn)."""
        return {ENV_PREFIX + f.name.upper(): _format(getattr(self, f.name)) for f in fields(self)}

    @property
    def aliases(self) -> dict[str, str]:
        """voice_aliases as {alias: voice}, names compared as written (OpenAI's are lower case)."""
        return parse_aliases(self.voice_aliases)

    @property
    def guard(self) -> GuardSettings:
        """The runaway guard's settings, as the service takes them."""
        return GuardSettings(self.runaway_guard, self.runaway_repetition_s, self.runaway_silence_s,
                             self.runaway_silence_db, self.runaway_text_budget)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


def parse_aliases(raw: str) -> dict[str, str]:
    aliases = {}
    for entry in filter(None, (e.strip() for e in raw.split(","))):
        alias, sep, voice = (part.strip() for part in entry.partition("="))
        if not sep or not alias or not voice:
            raise SystemExit(f"invalid value for {ENV_PREFIX}VOICE_ALIASES: {entry!r} (expected ALIAS=VOICE, "
                             "comma-separated)")
        aliases[alias] = voice
    return aliases


def _parse(kind: str, raw: str, name: str):
    try:
        if kind == "bool":
            lowered = raw.strip().lower()
            if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(raw)
            return lowered in ("1", "true", "yes", "on")
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        return raw
    except ValueError:
        raise SystemExit(f"invalid value for {ENV_PREFIX}{name.upper()}: {raw!r} (expected {kind})") from None


def _format(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)
