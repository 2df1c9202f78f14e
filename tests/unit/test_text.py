"""Text preparation and long-form chunking as upstream's examples/generation.py does them."""

import jieba

from model_pool.prompt.text import chunk_text, is_chinese, normalize, speaker_tags


def test_normalize_chinese_punctuation_units_and_events():
    out = normalize("你好，世界！（测试）今天25°C [laugh]  好")
    assert out == "你好, 世界! 测试 今天25 degrees Celsius <SE>[Laughter]</SE> 好."


def test_normalize_whitespace_lines_and_final_period():
    assert normalize("  Hello   world\n\n  second   line  ") == "Hello world\nsecond line."
    assert normalize("Already done!") == "Already done!"
    assert normalize("[music start] la [music end]") == "<SE_s>[Music]</SE_s> la <SE_e>[Music]</SE_e>"
    assert normalize("   \n  ") == ""
    assert normalize("Wait…") == "Wait..."


def test_speaker_tags_sorted_as_upstream():
    assert speaker_tags("[SPEAKER2] a [SPEAKER1] b [SPEAKER2] c") == ["SPEAKER1", "SPEAKER2"]
    assert speaker_tags("[SPEAKER10] a [SPEAKER2] b") == ["SPEAKER10", "SPEAKER2"]  # string order, like upstream


def test_speaker_chunks_start_only_at_tags_that_begin_a_line():
    text = "[SPEAKER0] Hi there.\nstill me.\n[SPEAKER1] Hello. [SPEAKER0] not a new turn\n[SPEAKER0] Bye."
    assert chunk_text(text, "speaker") == ["[SPEAKER0] Hi there.\nstill me.",
                                           "[SPEAKER1] Hello. [SPEAKER0] not a new turn", "[SPEAKER0] Bye."]
    assert chunk_text(text, "speaker", max_turns=2) == [
        "[SPEAKER0] Hi there.\nstill me.\n[SPEAKER1] Hello. [SPEAKER0] not a new turn", "[SPEAKER0] Bye."]


def test_word_chunks_ignore_lines_and_cut_every_n_words():
    text = normalize("One two three four five\nsix seven\n\neight nine ten\neleven twelve thirteen "
                     "fourteen fifteen sixteen seventeen eighteen nineteen twenty")
    assert chunk_text(text, "word", max_words=200) == [text + "\n\n"]  # 4 lines, 20 words: one chunk
    chunks = chunk_text(text, "word", max_words=8)
    assert [len(c.strip().split(" ")) for c in chunks] == [8, 8, 1]  # spaces only: "five\nsix" is one word
    assert " ".join(chunks).strip() == text


def test_word_chunks_count_chinese_in_jieba_words():
    text = normalize("今天天气很好，我们一起去公园散步吧。你好，世界！")
    assert is_chinese(text) and not is_chinese("Hello 你好 world")
    words = list(jieba.cut(text, cut_all=False))
    chunks = chunk_text(text, "word", max_words=4)
    assert len(chunks) == -(-len(words) // 4)
    assert "".join(chunks) == text + "\n\n"
    assert chunks[0] == "".join(words[:4])


def test_no_chunking_keeps_text():
    assert chunk_text("a b c", None) == ["a b c"]
