"""Plan turns -> token ids and audio codes, with every client string tokenized as plain text.

The chat template renders the turns with each client string replaced by a private sentinel, so every special token
in the rendered text is the template's own. The text is then cut only at those tokens; each piece between them
(template text and client text together, as whole-string tokenization would see it) is tokenized with special
tokens split, so a client's "<|eot_id|>" or "<|AUDIO_OUT|>" is spoken as characters, never obeyed. For text
without such strings the ids equal the tokenizer's on the whole prompt (tested). Audio placeholders are expanded to
one token per audio frame, as the processor does (the last codebooks-1 as delay tokens).

Two things follow Boson's own code (boson_multimodal/dataset/chatml_dataset.py, what the model was trained on)
where the hub template differs: audio outside assistant turns (the scene block's clips) opens with AUDIO_IN_BOS,
and client strings are tokenized as given, so the blank line that ends a word chunk's paragraph reaches the model
(the template's `trim` cannot reach inside a sentinel). docs/fidelity.md lists every difference.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ..defaults import MAX_RAS_WINDOW
from ..prompt.planner import Audio, AudioSource, Turn, User

_SENTINEL = re.compile("\ue000(\\d+)\ue001")
# Upstream renders system and user audio as <|audio_bos|><|AUDIO|><|audio_eos|>, assistant audio as
# <|audio_out_bos|><|AUDIO_OUT|><|audio_eos|>; the hub template uses the second for both. The placeholder stays the
# model's audio token: the codes' embeddings replace it either way, so only the opening marker differs.
AUDIO_IN_BOS = "<|audio_bos|>"


@dataclass
class EncodedPrompt:
    input_ids: torch.Tensor  # [length], on the CPU
    audio_ids: torch.Tensor | None  # [audio tokens, codebooks], delay pattern applied
    audio_positions: list[int]  # audio placeholders before each token, [length + 1] (chunked prefill)
    # The last columns of the assistant turns' audio (reference clips, earlier chunks), delay pattern applied: where
    # upstream's RAS window starts (its audio-out sequence; scene-block clips are audio-in there). At most
    # MAX_RAS_WINDOW columns, the most a window looks back.
    audio_out_tail: torch.Tensor | None = None

    def audio_before(self, position: int) -> int:
        return self.audio_positions[position]


class PromptEncoder:
    def __init__(self, processor, codes_for):
        self.tokenizer = processor.tokenizer
        self.template = processor.chat_template
        if AUDIO_IN_BOS not in self.tokenizer.added_tokens_encoder:
            raise RuntimeError(f"the text tokenizer has no {AUDIO_IN_BOS} token: not a Higgs Audio v2 tokenizer")
        self.audio_in_markup = AUDIO_IN_BOS + processor.audio_token + processor.audio_eos_token
        self.audio_token = processor.audio_token
        self.audio_ids = (processor.audio_token_id, processor.audio_delay_token_id)
        self.delay = processor.audio_tokenizer.config.num_quantizers - 1
        self.processor = processor
        self._codes_for = codes_for
        added = self.tokenizer.added_tokens_encoder
        self._special_ids = dict(added)
        self._special = re.compile("|".join(re.escape(t) for t in sorted(added, key=len, reverse=True)))

    def _messages(self, turns: list[Turn]) -> tuple[list[dict], list[str], list[AudioSource], list[bool]]:
        """The template's messages, the client strings, the audio sources in prompt order, and which of them are
        assistant audio."""
        strings: list[str] = []
        sources: list[AudioSource] = []
        assistant: list[bool] = []

        def compose(parts) -> str:
            out = []
            for part in parts:
                if isinstance(part, User):
                    out.append(f"\ue000{len(strings)}\ue001")
                    strings.append(part.text)
                elif isinstance(part, Audio):
                    out.append(self.audio_in_markup)
                    sources.append(part.source)
                    assistant.append(False)
                else:
                    out.append(part)
            return "".join(out)

        messages = []
        for turn in turns:
            if turn.role == "assistant":
                sources.append(turn.items[0][0].source)
                assistant.append(True)
                messages.append({"role": "assistant", "content": [{"type": "audio"}]})
            else:
                messages.append({"role": turn.role,
                                 "content": [{"type": "text", "text": compose(item)} for item in turn.items]})
        return messages, strings, sources, assistant

    def _render(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                  chat_template=self.template)

    def render(self, turns: list[Turn]) -> str:
        """The prompt as text (client strings in place, audio placeholders unexpanded): for logs and tests."""
        messages, strings, _, _ = self._messages(turns)
        return _SENTINEL.sub(lambda m: strings[int(m.group(1))], self._render(messages))

    def _plain(self, piece: str, strings: list[str]) -> list[int]:
        if not piece:
            return []
        text = _SENTINEL.sub(lambda m: strings[int(m.group(1))], piece)
        return self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]

    def encode(self, turns: list[Turn]) -> EncodedPrompt:
        messages, strings, sources, assistant = self._messages(turns)
        rendered = self._render(messages)
        delayed = [self._delayed(self._codes_for(s)) for s in sources]
        ids: list[int] = []
        audio = iter(delayed)
        position = 0
        for match in self._special.finditer(rendered):
            ids += self._plain(rendered[position:match.start()], strings)
            token = match.group()
            if token == self.audio_token:
                frames = next(audio).shape[0]
                ids += [self.audio_ids[0]] * (frames - self.delay) + [self.audio_ids[1]] * self.delay
            else:
                ids.append(self._special_ids[token])
            position = match.end()
        ids += self._plain(rendered[position:], strings)
        if next(audio, None) is not None or rendered.count(self.audio_token) != len(delayed):
            raise RuntimeError(f"the template rendered {rendered.count(self.audio_token)} audio placeholders for "
                               f"{len(delayed)} clips")
        positions = [0]
        for token in ids:
            positions.append(positions[-1] + (token in self.audio_ids))
        out = [clip for clip, out in zip(delayed, assistant) if out]
        tail = torch.cat(out)[-MAX_RAS_WINDOW:].clone() if out else None
        return EncodedPrompt(torch.tensor(ids, dtype=torch.long), torch.cat(delayed) if delayed else None,
                             positions, tail)

    def _delayed(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [frames, codebooks] -> stream begin + codes + stream end, delay pattern applied: [frames + 9, cb]."""
        seq = codes.transpose(0, 1).unsqueeze(0)
        bos = seq.new_full((1, seq.shape[1], 1), self.processor.audio_stream_bos_id)
        eos = seq.new_full((1, seq.shape[1], 1), self.processor.audio_stream_eos_id)
        return self.processor.build_delay_pattern(torch.cat([bos, seq, eos], dim=2))[0].transpose(0, 1)
