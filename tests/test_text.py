from model_pool.prompt.text import chunk_text, count_words, normalize, speakers_in, split_turns


def test_normalize_chinese_punctuation_units_and_events():
    out = normalize("你好，世界！（测试）今天25°C [laugh]  好")
    assert out == "你好,世界! 测试 今天25 degrees Celsius <SE>[Laughter]</SE> 好."


def test_normalize_whitespace_lines_and_final_period():
    assert normalize("  Hello   world\n\n  second   line  ") == "Hello world\nsecond line."
    assert normalize("Already done!") == "Already done!"
    assert normalize("[music start] la [music end]") == "<SE_s>[Music]</SE_s> la <SE_e>[Music]</SE_e>"
    assert normalize("   \n  ") == ""


def test_speakers_and_turns():
    text = "[SPEAKER0] Hi there.\n[SPEAKER1] Hello.\n[SPEAKER0] Bye."
    assert speakers_in(text) == ["SPEAKER0", "SPEAKER1"]
    assert split_turns(text) == ["[SPEAKER0] Hi there.", "[SPEAKER1] Hello.", "[SPEAKER0] Bye."]
    assert chunk_text(text, "speaker", max_turns=2) == ["[SPEAKER0] Hi there.\n[SPEAKER1] Hello.", "[SPEAKER0] Bye."]


def test_word_chunking_english_keeps_sentences_and_limit():
    text = "One two three. Four five six seven. Eight nine."
    assert chunk_text(text, "word", max_words=5) == ["One two three.", "Four five six seven.", "Eight nine."]
    long = " ".join(f"w{i}" for i in range(25)) + "."
    chunks = chunk_text(long, "word", max_words=10)
    assert [count_words(c) for c in chunks] == [10, 10, 5]
    assert " ".join(chunks) == long


def test_word_chunking_chinese_splits_characters_not_spaces():
    text = "今天天气很好我们一起去公园散步吧好的"  # no spaces at all
    chunks = chunk_text(text, "word", max_words=6)
    assert all(count_words(c) <= 6 for c in chunks)
    assert len(chunks) == 3
    assert "".join(chunks) == text


def test_no_chunking_keeps_text():
    assert chunk_text("a b c", None) == ["a b c"]
