"""Text streamed in a piece at a time, cut into sentences as they complete: the realtime sessions' splitter.

A sentence ends at `.` `!` `?` `;` followed by white space (closing quotes and brackets may stand between), at their
full-width forms `。` `！` `？` `；` at once (CJK text has no spaces), and at a line break. A sentence longer than
`max_chars` without an end is cut at its last clause boundary (`,` `:` and their full-width forms, `、`), else at
its last space, else at `max_chars`.

Every cut depends on the text alone, never on how it arrived: a decision about the text's next sentence is taken
only once the characters that decide it are there (the end mark's following character; for a forced cut, a few
characters past `max_chars`), and always on the same prefix. So the same text sent whole, word by word or character
by character gives the same sentences. `flush()` (the end of an utterance) takes the rest as it is.

Granularity (a session's split_granularity): "sentence" as above; "clause" cuts at clause boundaries too (`,` `:`
followed by white space, `，` `：` `、` at once) for an earlier first audio; "none" cuts nothing until `flush()`,
which takes the whole utterance as one piece.
"""

from __future__ import annotations

import re

DEFAULT_MAX_SENTENCE_CHARS = 300
GRANULARITIES = ("sentence", "clause", "none")
_CLOSERS = "\"'”’»)]}」』）】"
# An end mark: ASCII ones need white space after them (and any closers), so "3.14" and "e.g." mid-word stay whole.
# Full-width ones end at once, but their closers must have arrived: the next character is one that is not a closer.
_END = re.compile(rf"[.!?;][{re.escape(_CLOSERS)}]*(?=\s)|[。！？；][{re.escape(_CLOSERS)}]*(?=[^{re.escape(_CLOSERS)}])|\n")
_CLAUSE = re.compile(r"[,:，：、](?=\s)|[，：、]")
_LOOKAHEAD = 8  # characters past max_chars that must have arrived before a forced cut (covers closers + a space)
_WORDS = re.compile(r"\w")


class SentenceSplitter:
    def __init__(self, max_chars: int = DEFAULT_MAX_SENTENCE_CHARS, granularity: str = "sentence"):
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, not {granularity!r}")
        self.max_chars = max_chars
        self.granularity = granularity
        self._pending = ""

    @property
    def pending(self) -> str:
        """Text received that is not a sentence yet."""
        return self._pending

    def feed(self, text: str) -> list[str]:
        """Add text; return the sentences it completed, in order."""
        self._pending += text
        return self._take(final=False)

    def flush(self) -> list[str]:
        """The end of the utterance: every sentence left, the unfinished one included."""
        return self._take(final=True)

    def clear(self) -> None:
        self._pending = ""

    def _take(self, final: bool) -> list[str]:
        sentences = []
        while True:
            cut = self._next_cut(final)
            if cut is None:
                break
            piece, self._pending = self._pending[:cut], self._pending[cut:]
            if _WORDS.search(piece):  # "..." or a blank line alone says nothing: nothing to speak
                sentences.append(piece.strip())
        return sentences

    def _next_cut(self, final: bool) -> int | None:
        text = self._pending
        if not text:
            return None
        if self.granularity == "none":
            return len(text) if final else None
        window = text[: self.max_chars + _LOOKAHEAD]
        ends = [_END.search(window)] + ([_CLAUSE.search(window)] if self.granularity == "clause" else [])
        cut = min((m.end() for m in ends if m is not None), default=None)
        if cut is not None and cut <= self.max_chars:
            return cut
        if final and len(text) <= self.max_chars:
            return len(text)
        if len(text) < self.max_chars + _LOOKAHEAD and not final:
            return None  # not enough text yet to decide where this long sentence is cut
        head = text[: self.max_chars]
        clauses = [m.end() for m in _CLAUSE.finditer(head)]
        if clauses:
            return clauses[-1]
        space = head.rfind(" ")
        return space + 1 if space > 0 else self.max_chars
