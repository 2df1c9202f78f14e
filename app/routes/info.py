"""Server, voice and scene information, and health checks."""

from __future__ import annotations

from pathlib import Path

from model_pool.defaults import TINY_CHECKPOINT_MARKER

from ..runtime import runtime
from ..schemas import InfoSchema, ScenesSchema, VoicesSchema
from . import Blueprint

blp = Blueprint("info", __name__, description="Server, voice and scene information")

SUPPORTED_FEATURES = [
    "single-speaker audio generation",
    "multi-speaker audio generation",
    "voice cloning",
    "smart voice",
    "scene description",
    "streaming generation",
    "response formats: wav, mp3, opus, aac, flac, pcm",
    "OpenAI-compatible speech API (/v1/audio/speech)",
    "voice library API",
]


def random_weights(model_path: str) -> bool:
    """model_pool.tiny (`make demo`, the tests) marks the checkpoints it builds."""
    return (Path(model_path).parent / TINY_CHECKPOINT_MARKER).is_file()


@blp.route("/info", methods=["GET"])
@blp.response(200, InfoSchema)
def info():
    rt = runtime()
    status = rt.service.status()
    return {
        "model_name": rt.settings.model_path,
        "audio_tokenizer": rt.settings.audio_tokenizer_path,
        # The devices in use; before a load (or after a failed one), the devices --device means here.
        "device": ",".join(status["devices"]),
        "random_weights": random_weights(rt.settings.model_path),
        "is_loaded": status["pool"] is not None,
        "load_error": status["load_error"],
        "max_new_tokens": rt.settings.max_new_tokens,
        "runaway_guard": rt.settings.guard.describe(),
        "quantization": rt.settings.quantization,
        "supported_features": SUPPORTED_FEATURES,
        "pool": status["pool"] or {"state": status["state"]},
    }


@blp.route("/voices", methods=["GET"])
@blp.response(200, VoicesSchema)
def voices():
    items = runtime().voices.list()
    return {"voices": items, "count": len(items)}


@blp.route("/scenes", methods=["GET"])
@blp.response(200, ScenesSchema)
def scenes():
    items = runtime().scenes.list()
    return {"scenes": items, "count": len(items)}
