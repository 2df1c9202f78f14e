"""One model instance and its parts: loading, the batch loop (prefill, step, sampling), the KV cache, the codec."""

from .engine import HiggsEngine
from .prompt_encoder import EncodedPrompt
from .runner import Step

__all__ = ["EncodedPrompt", "HiggsEngine", "Step"]
