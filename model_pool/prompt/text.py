"""Text preparation as the model was trained on it, and long-form chunking, as upstream's examples/generation.py
does them (Boson AI's reference)."""

from __future__ import annotations

import logging
import re
import threading

# Full-width and typographic punctuation the model never saw in training, mapped to ASCII. The full-width comma
# becomes a comma and a space (Chinese text has no spaces to keep the words apart after it).
_PUNCTUATION = {
    "，": ", ", "。": ".", "：": ":", "；": ";", "？": "?", "！": "!",
    "（": "(", "）": ")", "【": "[", "】": "]", "《": "<", "》": ">",
    "“": '"', "”": '"', "‘": "'", "’": "'", "、": ",", "—": "-", "…": "...",
    "·": ".", "「": '"', "」": '"', "『": '"', "』": '"',
}  # fmt: skip

_SOUND_EVENTS = {
    "[laugh]": "<SE>[Laughter]</SE>",
    "[humming start]": "<SE_s>[Humming]</SE_s>",
    "[humming end]": "<SE_e>[Humming]</SE_e>",
    "[music start]": "<SE_s>[Music]</SE_s>",
    "[music end]": "<SE_e>[Music]</SE_e>",
    "[music]": "<SE>[Music]</SE>",
    "[sing start]": "<SE_s>[Singing]</SE_s>",
    "[sing end]": "<SE_e>[Singing]</SE_e>",
    "[applause]": "<SE>[Applause]</SE>",
    "[cheering]": "<SE>[Cheering]</SE>",
    "[cough]": "<SE>[Cough]</SE>",
}
_FINAL_MARKS = (".", "!", "?", ",", ";", '"', "'", "</SE_e>", "</SE>")
SPEAKER_TAG = re.compile(r"\[(SPEAKER\d+)\]")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")


def normalize(text: str) -> str:
    """Punctuation to ASCII, parentheses dropped, units spelled out, sound-event tags, tidy lines, a final mark."""
    for mark, ascii_mark in _PUNCTUATION.items():
        text = text.replace(mark, ascii_mark)
    text = text.replace("(", " ").replace(")", " ")
    text = text.replace("°F", " degrees Fahrenheit").replace("°C", " degrees Celsius")
    for tag, replacement in _SOUND_EVENTS.items():
        text = text.replace(tag, replacement)
    text = "\n".join(" ".join(line.split()) for line in text.split("\n") if line.strip()).strip()
    if text and not text.endswith(_FINAL_MARKS):
        text += "."
    return text


def speaker_tags(text: str) -> list[str]:
    """The distinct SPEAKERn tags of the text, sorted as upstream sorts them (as strings: SPEAKER10 < SPEAKER2)."""
    return sorted(set(SPEAKER_TAG.findall(text)))


def is_chinese(text: str) -> bool:
    """Upstream asks a language classifier; the script decides the same for the texts it matters for: more CJK
    characters than Latin letters."""
    return len(_CJK.findall(text)) > len(_LATIN.findall(text))


_jieba_lock = threading.Lock()


def chinese_words(text: str) -> list[str]:
    """jieba's segmentation (precise mode), as upstream counts Chinese words."""
    import jieba

    with _jieba_lock:  # the first call builds jieba's dictionary; do it once
        if not jieba.dt.initialized:
            jieba.setLogLevel(logging.WARNING)
            jieba.initialize()
    return list(jieba.cut(text, cut_all=False))


def chunk_text(text: str, method: str | None, max_words: int = 200, max_turns: int = 1) -> list[str]:
    """Split normalized text for long-form generation; `None` keeps it whole.

    speaker: a turn starts at each line that begins with a [SPEAKER tag (other lines continue the turn), and
    `max_turns` turns make a chunk. word: paragraphs (blank-line separated) are cut every `max_words` words:
    space-separated words, or jieba words for Chinese; a paragraph's last chunk ends with a blank line."""
    if method is None:
        return [text]
    if method == "speaker":
        turns: list[str] = []
        for line in (line.strip() for line in text.split("\n")):
            if line.startswith("[SPEAKER") or not turns:
                turns.append(line)
            else:
                turns[-1] += "\n" + line
        turns = [t.strip() for t in turns if t.strip()]
        return ["\n".join(turns[i : i + max_turns]) for i in range(0, len(turns), max_turns)]
    if method == "word":
        chinese = is_chinese(text)
        chunks: list[str] = []
        for paragraph in text.split("\n\n"):
            words = chinese_words(paragraph) if chinese else paragraph.split(" ")
            glue = "" if chinese else " "
            chunks += [glue.join(words[i : i + max_words]) for i in range(0, len(words), max_words)]
            chunks[-1] += "\n\n"
        return chunks
    raise ValueError(f"unknown chunk method {method!r}")
