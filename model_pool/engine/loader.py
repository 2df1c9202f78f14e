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
from . import quantize

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
    weights: quantize.WeightReport | None = None  # the quantization and the bytes the weights take


def device_names(spec: str) -> list[str]:
    """The devices `spec` means on this machine, as names (what /info shows before a model is loaded)."""
    try:
        return [str(d) for d in resolve_devices(spec)]
    except ModelLoadError:
        return [spec]


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub_reachable(timeout: float = 5.0) -> bool:
    """One request to the hub, through huggingface_hub's own client (its proxy settings). Any answer means the hub
    is there; no answer within `timeout` (no DNS, no route, a firewall) means it is not."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
        return True
    except Exception as exc:  # the client's connection and timeout errors (httpx), whatever their version
        log.warning("the model hub %s cannot be reached (%s): loading from the local cache only",
                    constants.ENDPOINT, f"{type(exc).__name__}: {exc}".splitlines()[0][:200])
        return False


def _hub_logs_once() -> None:
    """huggingface_hub gives its logger a stderr handler of its own and lets its records propagate as well: where
    the root logger has handlers (the server's), every hub warning would be printed twice."""
    hub_logger = logging.getLogger("huggingface_hub")
    if hub_logger.propagate and logging.getLogger().handlers:
        for handler in list(hub_logger.handlers):
            hub_logger.removeHandler(handler)


def _hub_options(*paths: str) -> dict:
    """from_pretrained options for this load. A hub id with the hub unreachable loads from the local cache only
    (offline), in seconds: otherwise the hub client retries every file with backoff (about a minute) before the
    same failure, with a warning per retry."""
    _hub_logs_once()
    if _offline() or all(Path(p).exists() for p in paths):
        return {}
    return {} if _hub_reachable() else {"local_files_only": True}


def _explain(what: str, path: str, exc: Exception, options: dict) -> ModelLoadError:
    cause = f"{type(exc).__name__}: {exc}".strip()
    first_line = cause.splitlines()[0][:400].rstrip(". ")
    message = f"cannot load {what} from '{path}': {first_line}"
    if not Path(path).exists():
        if _offline():
            reason = "offline mode (HF_HUB_OFFLINE is set), and the local cache has no copy"
        elif options.get("local_files_only"):
            reason = "the model hub cannot be reached, and the local cache has no copy"
        else:
            reason = "it is not a local directory, and the model hub failed"
        message += (
            f". '{path}' must come from the model hub: {reason}. Download both checkpoints on a machine with access"
            " and pass their directories with --model-path / --audio-tokenizer-path (README, \"The real model\"),"
            " or try `make demo` (a tiny offline checkpoint)."
        )
    return ModelLoadError(message)


# transformers' converter for the hub checkpoint may keep these aliases beside the weights they duplicate.
_KNOWN_ALIASES = frozenset({"audio_decoder_proj.audio_lm_head.weight", "audio_decoder_proj.text_lm_head.weight"})


def _refuse_partial(what: str, path: str, info: dict) -> None:
    """Missing or unexpected weights mean a wrong or damaged checkpoint: random or ignored weights would speak
    noise without a word of warning, so loading stops and names the keys."""
    problems = []
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        keys = sorted(str(k) for k in info.get(kind) or () if str(k) not in _KNOWN_ALIASES)
        if keys:
            shown = ", ".join(keys[:8]) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")
            problems.append(f"{kind.replace('_', ' ')}: {shown}")
    if problems:
        raise ModelLoadError(f"{what} at '{path}' does not match its architecture ({'; '.join(problems)}); "
                             "is it a complete transformers-format Higgs Audio v2 checkpoint?")


def load(model_path: str, audio_tokenizer_path: str, device: torch.device, quantization: str = "none"
         ) -> LoadedModel:
    """The model (its decoder layers' linear weights quantized as `quantization` says) and its processor, on
    `device`. A quantization the device cannot run is refused before any weight is read."""
    quantize.check(quantization, device)
    from transformers import (
        AutoTokenizer,
        DacFeatureExtractor,
        HiggsAudioV2ForConditionalGeneration,
        HiggsAudioV2Processor,
        HiggsAudioV2TokenizerModel,
    )

    dtype = dtype_for(device)
    hub = _hub_options(model_path, audio_tokenizer_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path, **hub)
        model, info = HiggsAudioV2ForConditionalGeneration.from_pretrained(model_path, dtype=dtype,
                                                                            output_loading_info=True, **hub)
    except Exception as exc:  # transformers raises OSError, ValueError, HTTP errors...
        raise _explain("the model", model_path, exc, hub) from exc
    _refuse_partial("the model", model_path, info)
    try:
        # float32 explicitly: the codec's encoder casts its input to float32, and its convolutions are small.
        audio_tokenizer, info = HiggsAudioV2TokenizerModel.from_pretrained(
            audio_tokenizer_path, dtype=torch.float32, output_loading_info=True, **hub)
        try:
            feature_extractor = DacFeatureExtractor.from_pretrained(audio_tokenizer_path, **hub)
        except OSError:
            # The codec repo may ship no preprocessor config; these are the values the processor expects.
            feature_extractor = DacFeatureExtractor(
                feature_size=1, hop_length=1, padding_side="right", padding_value=0.0, sampling_rate=24000
            )
    except Exception as exc:
        raise _explain("the audio tokenizer", audio_tokenizer_path, exc, hub) from exc
    _refuse_partial("the audio tokenizer", audio_tokenizer_path, info)
    quantizers, codebooks = audio_tokenizer.config.num_quantizers, model.config.num_codebooks
    if quantizers != codebooks:
        raise ModelLoadError(f"the audio tokenizer at '{audio_tokenizer_path}' has {quantizers} quantizers but the "
                             f"model at '{model_path}' expects {codebooks} codebooks: they do not belong together")
    if not tokenizer.chat_template:
        raise ModelLoadError(f"the model at '{model_path}' has no chat template (chat_template.jinja)")
    processor = HiggsAudioV2Processor(
        feature_extractor=feature_extractor,
        tokenizer=tokenizer,
        audio_tokenizer=audio_tokenizer,
        chat_template=tokenizer.chat_template,
    )
    # Quantized layer by layer onto the device while the rest waits on the CPU: the device never holds the whole
    # model unquantized (a 12 GB card could not).
    quantize.apply(model, quantization, device)
    model.to(device).eval()
    audio_tokenizer.to(device).eval()
    weights = quantize.weight_report(model)
    log.info("loaded %s + %s on %s (%s), %s", model_path, audio_tokenizer_path, device, dtype, weights.describe())
    return LoadedModel(model, processor, device, weights)
