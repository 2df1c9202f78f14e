"""Text preparation as the model was trained on it, and long-form chunking (English and Chinese)."""

from __future__ import annotations

import re

# Full-width and typographic punctuation the model never saw in training, mapped to ASCII.
_PUNCTUATION = str.maketrans(
    {
        "，": ",", "。": ".", "：": ":", "；": ";", "？": "?", "！": "!",
        "（": "(", "）": ")", "【": "[", "】": "]", "《": "<", "》": ">",
        "“": '"', "”": '"', "‘": "'", "’": "'", "、": ",", "—": "-",
        "·": ".", "「": '"', "」": '"', "『": '"', "』": '"',
    }
)  # fmt: skip

_SOUND_EVENTS = {
    "[laugh]": "<SE>[Laughter]</SE>",
    "[humming start]": "<SE_s>[Humming]</SE_s>",
    "[humming end]": "<SE_e>[Humming]</SE_e>",
    "[music start]": "<SE_s>[Music]</SE_s>",
    "[music end]": "<SE_e>[Music]</SE_e>",
    "[sing start]": "<SE_s>[Singing]</SE_s>",
    "[sing end]": "<SE_e>[Singing]</SE_e>",
    "[music]": "<SE>[Music]</SE>",
    "[applause]": "<SE>[Applause]</SE>",
    "[cheering]": "<SE>[Cheering]</SE>",
    "[cough]": "<SE>[Cough]</SE>",
}
_FINAL_MARKS = (".", "!", "?", ",", ";", '"', "'", "</SE_e>", "</SE>")
SPEAKER_TAG = re.compile(r"\[(SPEAKER\d+)\]")
_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
# A word is one CJK character or a run of other non-space characters.
_WORD = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+")
_SENTENCE_END = re.compile(r"(?<=[.!?;。！？；])\s*")


def normalize(text: str) -> str:
    """Punctuation to ASCII, parentheses dropped, units spelled out, sound-event tags, tidy whitespace."""
    text = text.replace("…", "...").translate(_PUNCTUATION)
    text = text.replace("(", " ").replace(")", " ")
    text = text.replace("°F", " degrees Fahrenheit").replace("°C", " degrees Celsius")
    for tag, replacement in _SOUND_EVENTS.items():
        text = text.replace(tag, replacement)
    lines = (" ".join(line.split()) for line in text.split("\n"))
    text = "\n".join(line for line in lines if line)
    if text and not text.endswith(_FINAL_MARKS):
        text += "."
    return text


def speakers_in(text: str) -> list[str]:
    """The distinct [SPEAKERn] tags in order of first appearance."""
    seen: list[str] = []
    for tag in SPEAKER_TAG.findall(text):
        if tag not in seen:
            seen.append(tag)
    return seen


def split_turns(text: str) -> list[str]:
    """Split at each [SPEAKERn] tag; each turn keeps its tag. Text before the first tag is a turn too."""
    starts = [m.start() for m in SPEAKER_TAG.finditer(text)]
    if not starts:
        return [text.strip()] if text.strip() else []
    bounds = ([0] if starts[0] > 0 else []) + starts + [len(text)]
    turns = (text[a:b].strip() for a, b in zip(bounds, bounds[1:]))
    return [t for t in turns if t]


def count_words(text: str) -> int:
    return len(_WORD.findall(text))


def _is_cjk(char: str) -> bool:
    return bool(re.match(rf"[{_CJK}]", char))


def _join_words(words: list[str]) -> str:
    """Latin words are separated by spaces; CJK characters are written without them."""
    out = ""
    for word in words:
        if out and not (_is_cjk(out[-1]) or _is_cjk(word[0])):
            out += " "
        out += word
    return out


def _split_words(paragraph: str, max_words: int) -> list[str]:
    """Pack whole sentences into chunks of at most max_words; a longer sentence is cut between words."""
    chunks: list[list[str]] = [[]]
    for sentence in filter(None, (s.strip() for s in _SENTENCE_END.split(paragraph))):
        words = _WORD.findall(sentence)
        if chunks[-1] and len(chunks[-1]) + len(words) > max_words:
            chunks.append([])
        while len(words) > max_words:
            if chunks[-1]:
                chunks.append([])
            chunks[-1].extend(words[:max_words])
            words = words[max_words:]
            chunks.append([])
        chunks[-1].extend(words)
    return [_join_words(c) for c in chunks if c]


def chunk_text(text: str, method: str | None, max_words: int = 200, max_turns: int = 1) -> list[str]:
    """Split normalized text for long-form generation. `None` keeps it whole."""
    if method is None:
        return [text]
    if method == "speaker":
        turns = split_turns(text)
        return ["\n".join(turns[i : i + max_turns]) for i in range(0, len(turns), max_turns)] or [text]
    if method == "word":
        chunks: list[str] = []
        for paragraph in re.split(r"\n\s*\n|\n", text):
            if paragraph.strip():
                chunks.extend(_split_words(paragraph.strip(), max_words))
        return chunks or [text]
    raise ValueError(f"unknown chunk method {method!r}")
