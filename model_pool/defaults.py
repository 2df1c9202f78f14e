"""Defaults and limits that the engine and the server share, each defined once here.

The server's settings (app/settings.py) take their defaults from these names; the HTTP schemas take their bounds
from them. Nothing here reads the environment.
"""

DEFAULT_MODEL = "bosonai/higgs-audio-v2-generation-3B-base"
DEFAULT_AUDIO_TOKENIZER = "bosonai/higgs-audio-v2-tokenizer"
DEFAULT_SCENE = "quiet_indoor"
# model_pool.tiny writes this file beside the random-weight checkpoint it builds (make demo, the tests): /info says so.
TINY_CHECKPOINT_MARKER = "TINY_CHECKPOINT.json"

DEFAULT_MAX_NEW_TOKENS = 2048  # decode steps per chunk (the spec's --max-new-tokens)
# Tokens one row may hold in the KV cache: its prompt plus its max_new_tokens. Upstream's engine uses static caches
# of up to 8192; long-form prompts carry earlier chunks' audio (25 tokens a second), so they grow quickly.
DEFAULT_MAX_CONTEXT_TOKENS = 8192
DEFAULT_PREFILL_CHUNK = 512  # prompt tokens prefilled between two decode steps (bounds the stall of running rows)
DEFAULT_MAX_BATCH_SIZE = 8  # an engine's slots when built directly (tests, benchmarks)
# The server's --max-batch-size 0 (its default): the memory plan takes as many slots as fit, up to this many per
# instance on a device of this kind (any other kind: DEFAULT_MAX_BATCH_SIZE). A GPU step costs about the same for 1
# row as for 64 (it reads the weights either way); on a CPU each row costs compute (8 clients got 2.4-3x one client's
# frames/s on 2 cores: docs/performance.md). --max-batch-size N takes at most N instead, above or below these.
AUTO_MAX_SLOTS = {"cuda": 64}
# The weights' precision (--quantization; model_pool/engine/quantize.py): none keeps the device's (bf16 on a GPU).
QUANTIZATIONS = ("none", "int8", "fp8", "int4")
DEFAULT_QUEUE_TIMEOUT = 60.0  # seconds an admitted request may wait for a free batch slot
# Decode steps one request may cost: its chunks x max_new_tokens, checked before any work (about 22 minutes of
# audio at 25 frames a second).
DEFAULT_MAX_REQUEST_STEPS = 32768

# The runaway guard (model_pool/guard.py; docs/operations.md, "Runaway guard"): a generation that has stopped
# speaking ends. 0 turns a detector off.
DEFAULT_RUNAWAY_REPETITION_S = 1.0  # the same frame, or a cycle of a few frames, repeating this long
DEFAULT_RUNAWAY_SILENCE_S = 3.0  # audio below the silence level this long, after speech began
DEFAULT_RUNAWAY_SILENCE_DB = -50.0  # the silence level: RMS of a 40 ms frame, dBFS
DEFAULT_RUNAWAY_TEXT_BUDGET = 3.0  # a chunk's audio may last this multiple of its text's slow spoken length (+5 s)

MIN_TEMPERATURE = 1e-5  # below it sampling is greedy (as vLLM); logits / temperature then stay finite in float32
MAX_TEMPERATURE = 2.0
MAX_RAS_WINDOW = 1000
MAX_SPEAKERS = 8
DEFAULT_MAX_TEXT_CHARS = 20000
MAX_REFERENCE_SECONDS = 30.0  # a reference clip (upload or voice file); longer ones only cost context


def auto_max_slots(device_kind: str) -> int:
    """The most slots the memory plan takes by itself on a device of this kind ("cuda", "cpu", "mps")."""
    return AUTO_MAX_SLOTS.get(device_kind, DEFAULT_MAX_BATCH_SIZE)


def default_max_waiting(slots: int) -> int:
    """Requests that may wait for a batch slot when --max-queue is not set: twice the slots."""
    return 2 * slots
