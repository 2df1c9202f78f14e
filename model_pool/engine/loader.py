"""Load the Higgs Audio v2 model and build its processor from parts, with transformers' native classes.

The hub model's processor config names its own audio tokenizer id, so AutoProcessor would fetch that one
whatever --audio-tokenizer-path says. We assemble the processor ourselves: text tokenizer and chat template
from the model path, feature extractor and audio tokenizer from the audio tokenizer path.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..defaults import DEFAULT_AUDIO_TOKENIZER, DEFAULT_MODEL  # noqa: F401  (re-exported)
from ..errors import ModelLoadError

log = logging.getLogger(__name__)


def resolve_devices(spec: str = "auto") -> list[torch.device]:
    """'auto' means every CUDA GPU, else MPS, else the CPU. 'cuda' means every GPU; 'cuda:N' one."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return [torch.device("mps")]
        return [torch.device("cpu")]
    if spec == "cpu":
        return [torch.device("cpu")]
    if spec == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ModelLoadError("device 'mps' was requested but MPS is not available on this machine")
        return [torch.device("mps")]
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ModelLoadError(f"device '{spec}' was requested but CUDA is not available; try --device cpu")
        if spec == "cuda":
            return [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
        index = spec.split(":", 1)[1]
        if not index.isdigit() or int(index) >= torch.cuda.device_count():
            raise ModelLoadError(f"device '{spec}' does not exist: {torch.cuda.device_count()} CUDA device(s)")
        return [torch.device("cuda", int(index))]
    raise ModelLoadError(f"unknown device '{spec}': use auto, cpu, cuda, cuda:N or mps")


def dtype_for(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


@dataclass
class LoadedModel:
    model: object  # HiggsAudioV2ForConditionalGeneration
    processor: object  # HiggsAudioV2Processor
    device: torch.device
    model_path: str
    audio_tokenizer_path: str


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _explain(what: str, path: str, exc: Exception) -> ModelLoadError:
    cause = f"{type(exc).__name__}: {exc}".strip()
    first_line = cause.splitlines()[0][:400]
    message = f"cannot load {what} from '{path}': {first_line}"
    if not Path(path).exists():
        reason = "offline mode (HF_HUB_OFFLINE is set)" if _offline() else "not a local directory"
        message += (
            f". '{path}' is {reason}, so it must come from the model hub, which failed"
            " (no network?). Pass a local directory with --model-path / --audio-tokenizer-path"
            " (`make demo` builds a tiny offline checkpoint)."
        )
    return ModelLoadError(message)


def load(model_path: str, audio_tokenizer_path: str, device: torch.device) -> LoadedModel:
    from transformers import (
        AutoTokenizer,
        DacFeatureExtractor,
        HiggsAudioV2ForConditionalGeneration,
        HiggsAudioV2Processor,
        HiggsAudioV2TokenizerModel,
    )

    dtype = dtype_for(device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        model = HiggsAudioV2ForConditionalGeneration.from_pretrained(model_path, dtype=dtype)
    except Exception as exc:  # transformers raises OSError, ValueError, HTTP errors...
        raise _explain("the model", model_path, exc) from exc
    try:
        audio_tokenizer = HiggsAudioV2TokenizerModel.from_pretrained(audio_tokenizer_path)
        try:
            feature_extractor = DacFeatureExtractor.from_pretrained(audio_tokenizer_path)
        except OSError:
            # The codec repo may ship no preprocessor config; these are the values the processor expects.
            feature_extractor = DacFeatureExtractor(
                feature_size=1, hop_length=1, padding_side="right", padding_value=0.0, sampling_rate=24000
            )
    except Exception as exc:
        raise _explain("the audio tokenizer", audio_tokenizer_path, exc) from exc
    if not tokenizer.chat_template:
        raise ModelLoadError(f"the model at '{model_path}' has no chat template (chat_template.jinja)")
    processor = HiggsAudioV2Processor(
        feature_extractor=feature_extractor,
        tokenizer=tokenizer,
        audio_tokenizer=audio_tokenizer,
        chat_template=tokenizer.chat_template,
    )
    model.to(device).eval()
    audio_tokenizer.to(device).eval()  # the codec stays in float32: its convolutions are small
    log.info("loaded %s + %s on %s (%s)", model_path, audio_tokenizer_path, device, dtype)
    return LoadedModel(model, processor, device, model_path, audio_tokenizer_path)
