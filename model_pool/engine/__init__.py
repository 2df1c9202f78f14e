"""One model instance and its parts: loading, the batch loop (prefill, step, sampling), the KV cache, the codec."""

from .engine import EncodedPrompt, HiggsEngine
from .runner import Step

__all__ = ["EncodedPrompt", "HiggsEngine", "Step"]
