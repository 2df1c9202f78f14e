"""Build a tiny random-weight Higgs Audio v2 checkpoint offline, in the hub layout.

    python -m model_pool.tiny OUT_DIR [--size tiny|small|full]

writes OUT_DIR/model (model, text tokenizer, chat template, generation config) and OUT_DIR/audio_tokenizer
(HiggsAudioV2TokenizerModel + DacFeatureExtractor). Same codec geometry as the real one: 8 codebooks,
25 frames/s, 24 kHz. Random weights speak noise, but every code path runs for real.

Three traps are defused here (see HIGGS_V2_NOTES.md). A fresh codec's codebooks are all zeros, so every code
would decode to the same sound, and codebooks large enough to be heard drown the encoder's output, so every clip
would encode to the same codes: each quantizer gets codebooks on the scale of what it quantizes (a residual
quantizer: orthonormal projections, codebooks shrinking stage by stage), the decoder a gain instead, and the
decode-path biases are zeroed, so the codes depend on the clip and the audio on the codes. A random LM stops at a
random step: the audio head's rows for the stream begin/end codes are zeroed, so greedy or top-k sampling runs to
max_new_tokens (predictable lengths for tests).

`--stuck repetition|silence` builds a checkpoint that is stuck on purpose, for the runaway guard's tests
(model_pool/guard.py): it speaks about a second of noise, then repeats one frame for ever (repetition) or cycles
through codes the codec decodes to digital silence (silence), whatever the sampling, and never ends by itself.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .defaults import TINY_CHECKPOINT_MARKER

SPECIAL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|AUDIO_OUT|>",
    "<|audio_out_bos|>",
    "<|audio_eos|>",
    "<|reserved_special_token_6|>",
    "<|scene_desc_start|>",
    "<|scene_desc_end|>",
    "<|audio_bos|>",  # upstream opens audio outside assistant turns with it (prompt_encoder.AUDIO_IN_BOS)
]

# (hidden, layers, heads, kv heads, intermediate)
SIZES = {
    "tiny": (64, 2, 4, 2, 128),
    "small": (512, 8, 8, 4, 1024),
    "full": (3072, 28, 24, 8, 8192),
}

_CORPUS = [
    "The sun rises in the east and sets in the west.",
    "Hello, this is a test of the Higgs Audio API server.",
    "Generate audio following instruction. SPEAKER0: feminine SPEAKER1: masculine",
    "Audio is recorded from a quiet room. [Laughter] [Music] [Humming] [Singing]",
    "今天天气很好，我们一起去公园散步吧。你好，世界！",
    "0123456789 .,;:!?'\"()-[]<>/ abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ",
]


def chat_template() -> str:
    return (Path(__file__).parent / "prompt" / "chat_template.jinja").read_text(encoding="utf-8")


def _build_text_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<|end_of_text|>",
    )
    fast.chat_template = chat_template()
    return fast


def _build_model(tokenizer, size: str, seed: int):
    import torch
    from transformers import GenerationConfig, HiggsAudioV2Config, HiggsAudioV2ForConditionalGeneration

    hidden, layers, heads, kv_heads, inter = SIZES[size]
    ids = tokenizer.convert_tokens_to_ids
    config = HiggsAudioV2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=hidden // heads,
        max_position_embeddings=8192,
        num_codebooks=8,
        codebook_size=1026,
        audio_stream_bos_id=1024,
        audio_stream_eos_id=1025,
        audio_token_id=ids("<|AUDIO_OUT|>"),
        audio_bos_token_id=ids("<|audio_out_bos|>"),
        audio_delay_token_id=ids("<|reserved_special_token_6|>"),
        eos_token_id=ids("<|eot_id|>"),
        pad_token_id=ids("<|end_of_text|>"),
        bos_token_id=ids("<|begin_of_text|>"),
    )
    torch.manual_seed(seed)
    model = HiggsAudioV2ForConditionalGeneration(config).eval()
    with torch.no_grad():
        head = model.audio_lm_head.weight.view(config.num_codebooks, config.codebook_size, hidden)
        head[:, config.audio_stream_bos_id :, :] = 0.0
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        ras_win_len=7,
        ras_win_max_num_repeat=2,
    )
    return model


# The encoder's output (its fc layer's) is about 1 per dimension; each residual stage takes off part of what is left.
_FIRST_CODEBOOK_STD, _CODEBOOK_SHRINK = 1.0, 0.7
_DECODE_GAIN = 1000.0  # decoded audio then peaks at about 0.2


def _residual_stage(quantizer, stage: int, gen) -> None:
    """A working residual quantizer stage: project_out undoes project_in (orthonormal), so each stage quantizes
    what the stages before it left, with random codebook vectors spread like that remainder. A chirp then uses
    dozens of codes per codebook in two seconds, and two different clips encode differently."""
    import torch

    hidden, dim = quantizer.project_in.in_features, quantizer.project_in.out_features
    basis = torch.linalg.qr(torch.randn(hidden, dim, generator=gen))[0]  # [hidden, dim], orthonormal columns
    quantizer.project_in.weight.copy_(basis.T)
    quantizer.project_out.weight.copy_(basis)
    embed = quantizer.codebook.embed
    embed.copy_(torch.randn(embed.shape, generator=gen) * _FIRST_CODEBOOK_STD * _CODEBOOK_SHRINK**stage)


def _build_audio_tokenizer(seed: int):
    import torch
    from transformers import DacFeatureExtractor, HiggsAudioV2TokenizerConfig, HiggsAudioV2TokenizerModel

    config = HiggsAudioV2TokenizerConfig(
        target_bandwidths=[0.5, 1, 1.5, 2],
        codebook_dim=16,
        acoustic_model_config={
            "encoder_hidden_size": 4,
            "decoder_hidden_size": 64,
            "hidden_size": 16,
            "downsampling_ratios": [8, 5, 4, 2, 3],
            "upsampling_ratios": [8, 5, 4, 2, 3],
        },
        semantic_model_config={
            "hidden_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 32,
            "conv_dim": [8] * 7,
            "num_conv_pos_embeddings": 16,
            "num_conv_pos_embedding_groups": 2,
        },
    )
    torch.manual_seed(seed)
    codec = HiggsAudioV2TokenizerModel(config).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for part in ("acoustic_decoder", "fc", "fc1", "fc2", "quantizer"):
            for pname, param in getattr(codec, part).named_parameters():
                if pname.endswith("bias"):
                    param.zero_()
        for stage, quantizer in enumerate(codec.quantizer.quantizers):
            _residual_stage(quantizer, stage, gen)
        codec.fc2.weight.mul_(_DECODE_GAIN)
    extractor = DacFeatureExtractor(
        feature_size=1,
        hop_length=1,
        padding_side="right",
        padding_value=0.0,
        sampling_rate=24000,
        return_attention_mask=True,
    )
    return codec, extractor


STUCK = ("repetition", "silence")
_SPOKEN_CODES = 30  # a stuck model's codes before it gets stuck: about a second of noise
_SILENT_CYCLE = 20  # the silent codes it then cycles through: longer than any cycle the guard calls a repetition
_STUCK_GAIN = 10.0  # the chosen code's logit (times the normed state's 8 for the tiny size), every other one's 0


def _make_stuck(model, codec, mode: str) -> None:
    """Turn the random model into a state machine that ignores everything but the last code of codebook 0: the
    attention and MLP outputs are zeroed, so the last position's hidden state is its input embedding; each code's
    embedding is a one-hot state, and the audio head maps each state to the code after it (for every codebook):
    start -> 0 -> 1 -> ... -> 29, then 29 for ever (repetition), or a cycle of 20 codes that the codec decodes to
    zero (silence). Sampling cannot leave it: the chosen code's logit is about 80 and every other code's 0."""
    import torch

    config = model.config
    hidden, books, size = config.hidden_size, config.num_codebooks, config.codebook_size
    spoken = list(range(_SPOKEN_CODES))
    silent = list(range(_SPOKEN_CODES, _SPOKEN_CODES + _SILENT_CYCLE)) if mode == "silence" else []
    codes = spoken + silent
    if len(codes) + 1 > hidden:
        raise ValueError(f"a stuck checkpoint needs a hidden size of at least {len(codes) + 1}")
    following = {c: c + 1 for c in spoken[:-1]}
    following[spoken[-1]] = silent[0] if silent else spoken[-1]
    for i, c in enumerate(silent):
        following[c] = silent[(i + 1) % len(silent)]
    inner = model.model
    with torch.no_grad():
        for layer in inner.layers:
            for linear in (layer.self_attn.o_proj, layer.mlp.down_proj, layer.audio_mlp.down_proj):
                linear.weight.zero_()
                if linear.bias is not None:
                    linear.bias.zero_()
        state = torch.eye(hidden) * 100.0  # row d: state d (0: the prompt's end, 1 + c: code c came last)
        inner.embed_tokens.weight.copy_(state[0].expand_as(inner.embed_tokens.weight))
        audio = inner.embed_audio_tokens.embed_audio_tokens.weight
        audio.zero_()
        for c in codes:
            audio[c] = state[1 + c]  # codebook 0's rows come first; the other codebooks' stay zero
        audio[config.audio_stream_bos_id] = state[0]  # the prompt may end on the stream-begin frame instead
        head = model.audio_lm_head.weight.view(books, size, hidden)
        head.zero_()
        head[:, codes[0], 0] = _STUCK_GAIN
        for c, after in following.items():
            head[:, after, 1 + c] = _STUCK_GAIN
        for quantizer in codec.quantizer.quantizers:  # the silent codes decode to nothing (the biases are zero)
            quantizer.codebook.embed[silent] = 0.0


def build(out_dir: str | Path, size: str = "tiny", seed: int = 0, stuck: str | None = None) -> Path:
    """Write the checkpoint to out_dir and return it. Deterministic for a given size, seed and stuck mode."""
    out = Path(out_dir)
    model_dir, codec_dir = out / "model", out / "audio_tokenizer"
    tokenizer = _build_text_tokenizer()
    model = _build_model(tokenizer, size, seed)
    codec, extractor = _build_audio_tokenizer(seed)
    if stuck is not None:
        _make_stuck(model, codec, stuck)
    model_dir.mkdir(parents=True, exist_ok=True)
    codec_dir.mkdir(parents=True, exist_ok=True)
    if size == "full":  # the real architecture: store bf16 like the hub (about 12 GB), not 24 GB of fp32
        import torch

        model = model.to(torch.bfloat16)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    (model_dir / "chat_template.jinja").write_text(chat_template(), encoding="utf-8")
    codec.save_pretrained(codec_dir)
    extractor.save_pretrained(codec_dir)
    marker = {"size": size, "seed": seed, **({"stuck": stuck} if stuck else {})}
    (out / TINY_CHECKPOINT_MARKER).write_text(json.dumps(marker), encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stuck", choices=STUCK, default=None,
                        help="stuck on purpose: about a second of noise, then a repeated frame or silence")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    out = build(args.out_dir, args.size, args.seed, args.stuck)
    print(f"wrote {out}/model and {out}/audio_tokenizer in {time.perf_counter() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
