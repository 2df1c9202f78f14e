"""Realtime sessions against the real server (`python api_server.py`, gunicorn gthread) with a real WebSocket client
(the `websockets` library's sync client): the protocol, sentences as they complete, the same audio however the text
arrives, barge-in, a closed socket, bad input, limits, and who may connect."""

from __future__ import annotations

import base64
import io
import json
import time

import pytest
import requests
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from harness import get_json, start_server, wait_until
from helpers import EXAMPLES, decode_audio

TEXT = "Hello there. How are you today? I am fine; thanks!"
SENTENCES = ["Hello there.", "How are you today?", "I am fine;", "thanks!"]


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tmp_path_factory):
    srv = start_server(tiny_checkpoint, tmp_path_factory.mktemp("realtime"), "--max-new-tokens", "400",
                       "--voice-aliases", "alloy=belinda")
    yield srv
    srv.stop(wait=False)


@pytest.fixture(scope="module")
def guarded(tiny_checkpoint, tmp_path_factory):
    """A server with an API key, allowed origins, two sessions per worker and a short idle limit."""
    srv = start_server(tiny_checkpoint, tmp_path_factory.mktemp("realtime-guarded"), "--max-new-tokens", "400",
                       "--api-key", "s3cret-key", "--cors-origins", "https://app.example", "--max-sessions", "2",
                       env={"HIGGS_SESSION_IDLE_TIMEOUT": "1", "HIGGS_MAX_MESSAGE_KB": "4"})
    yield srv
    srv.stop(wait=False)


def ws_url(srv) -> str:
    return srv.url.replace("http://", "ws://") + "/v1/audio/speech/stream"


def config(**fields) -> str:
    """Our own clients' config: PCM as it is made (a session's default is vllm-omni's, one WAV file a sentence)."""
    return json.dumps({"type": "session.config", "max_new_tokens": 40, "response_format": "pcm", **fields})


def text(value: str) -> str:
    return json.dumps({"type": "input.text", "text": value})


DONE = json.dumps({"type": "input.done"})
CANCEL = json.dumps({"type": "input.cancel"})


def until(ws, kind: str, timeout: float = 120) -> tuple[list[dict], dict[tuple[int, int], bytes]]:
    """Messages up to and including the first of `kind`, and the audio bytes each sentence received."""
    events, audio, current = [], {}, None
    deadline = time.monotonic() + timeout
    while True:
        message = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
        if isinstance(message, bytes):
            assert current is not None, "audio before audio.start"
            audio[current] = audio.get(current, b"") + message
            continue
        event = json.loads(message)
        events.append(event)
        if event["type"] == "audio.start":
            current = (event["utterance_index"], event["sentence_index"])
        if event["type"] == kind:
            return events, audio


def speak(srv, pieces: list[str], **fields) -> tuple[list[dict], dict]:
    with connect(ws_url(srv)) as ws:
        ws.send(config(**fields))
        for piece in pieces:
            ws.send(text(piece))
        ws.send(DONE)
        return until(ws, "session.done")


def test_the_protocol_of_one_utterance_and_the_next(server):
    with connect(ws_url(server)) as ws:
        ws.send(config(seed=1))
        ws.send(text(TEXT))
        ws.send(DONE)
        events, audio = until(ws, "session.done")
        starts = [e for e in events if e["type"] == "audio.start"]
        dones = [e for e in events if e["type"] == "audio.done"]
        assert [e["sentence_text"] for e in starts] == SENTENCES
        assert all(e["format"] == "pcm" and e["sample_rate"] == 24000 and e["utterance_index"] == 0 for e in starts)
        assert {e["seed"] for e in starts} == {1}
        assert [d["total_bytes"] for d in dones] == [len(audio[(0, i)]) for i in range(4)]
        assert all(len(chunk) % 2 == 0 and len(chunk) > 0 for chunk in audio.values())  # PCM16 mono
        assert events[-1] == {"type": "session.done", "utterance_index": 0, "total_sentences": 4}
        ws.send(text("And one more."))  # the connection stays for the next utterance
        ws.send(DONE)
        events, _ = until(ws, "session.done")
        assert events[0]["utterance_index"] == 1 and events[-1]["total_sentences"] == 1


def test_a_sentence_is_spoken_before_the_utterance_ends(server):
    with connect(ws_url(server)) as ws:
        ws.send(config(seed=2))
        ws.send(text("The first sentence is complete. The second is not yet"))
        events, audio = until(ws, "audio.done")  # without input.done
        assert events[0]["sentence_text"] == "The first sentence is complete." and audio[(0, 0)]
        ws.send(DONE)
        events, _ = until(ws, "session.done")
        assert [e["sentence_text"] for e in events if e["type"] == "audio.start"] == ["The second is not yet"]


def test_the_same_text_however_it_arrives_gives_the_same_sentences_and_audio(server):
    whole = speak(server, [TEXT], seed=5)
    words = speak(server, [w + " " for w in TEXT.split(" ")], seed=5)
    chars = speak(server, list(TEXT), seed=5)
    for events, audio in (words, chars):
        assert [e.get("sentence_text") for e in events] == [e.get("sentence_text") for e in whole[0]]
        assert audio == whole[1]
    greedy = [speak(server, [TEXT], temperature=0)[1] for _ in range(2)]  # no seed: temperature 0 repeats
    assert greedy[0] == greedy[1]
    chosen = speak(server, [SENTENCES[0]])  # sampled without a seed: the one the server chose replays the audio
    seed = chosen[0][0]["seed"]
    assert isinstance(seed, int) and speak(server, [SENTENCES[0]], seed=seed)[1] == chosen[1]


def test_each_sentence_hears_the_ones_before_it(server):
    """A sentence's audio depends on the session's earlier sentences (they are its context): change the first and
    the second changes; speak the second alone and it changes too."""
    _, base = speak(server, ["One sentence here. The same second sentence."], seed=9)
    _, other = speak(server, ["A different opening line. The same second sentence."], seed=9)
    _, alone = speak(server, ["The same second sentence."], seed=9)
    assert base[(0, 1)] != other[(0, 1)] and base[(0, 1)] != alone[(0, 0)]


def test_cancel_stops_now_and_nothing_of_the_utterance_follows(server):
    with connect(ws_url(server)) as ws:
        ws.send(config(seed=3, max_new_tokens=400))
        ws.send(text("A long sentence that will be interrupted. And a queued one. And a third."))
        events, audio = until(ws, "audio.start")
        first = ws.recv(timeout=60)
        assert isinstance(first, bytes)
        sent = time.monotonic()
        ws.send(CANCEL)
        after, late = [], 0
        while True:
            message = ws.recv(timeout=60)
            if isinstance(message, bytes):
                assert not after, "audio after cancelled"
                late += 1
                continue
            after.append(json.loads(message))
            if after[-1]["type"] == "cancelled":
                break
        assert after[-1] == {"type": "cancelled", "utterance_index": 0}
        assert time.monotonic() - sent < 5  # 400 steps would take far longer than the step it waits for
        ws.send(text("Still usable."))  # the session goes on with the next utterance
        ws.send(DONE)
        events, audio = until(ws, "session.done")
        assert not any(e["type"] in ("audio.start", "audio.done") and e["utterance_index"] == 0 for e in events)
        assert [e["sentence_text"] for e in events if e["type"] == "audio.start"] == ["Still usable."]
        assert events[-1]["utterance_index"] == 1
    wait_until(lambda: get_json(server.url, "/info")["pool"]["admitted"] == 0, 30, "the pool to be empty")
    assert "realtime" in server.log() and " cancelled: " in server.log()


def test_closing_the_socket_stops_the_generation_and_frees_the_slot(server):
    with connect(ws_url(server)) as ws:
        ws.send(config(max_new_tokens=400))
        ws.send(text("This sentence is cut off when the client hangs up. "))
        until(ws, "audio.start")
        assert isinstance(ws.recv(timeout=60), bytes)
    started = time.monotonic()
    wait_until(lambda: get_json(server.url, "/info")["pool"]["admitted"] == 0, 30, "the slot to be freed")
    assert time.monotonic() - started < 10


def test_bad_input_is_an_error_event_and_the_session_survives(server):
    with connect(ws_url(server)) as ws:
        ws.send(config(seed=1))
        cases = [
            ("not json", "message", "not JSON"),
            (json.dumps([1, 2]), "message", "JSON object"),
            (json.dumps({"type": "input.shout"}), "type", "unknown message type"),
            (b"\x00\x01", "message", "binary frames"),
            (json.dumps({"type": "input.text", "text": 5}), "text", "string"),
            (config(temperature="hot"), "temperature", "temperature"),
            (config(voice="nobody_here"), "voice", "unknown voice"),
            (config(response_format="ogg"), "response_format", "response_format"),
            # JSON escapes can carry a lone surrogate, which no tokenizer takes
            ('{"type": "input.text", "text": "Hi \\ud800 there."}', "text", "lone surrogate"),
        ]
        for message, field, words in cases:
            ws.send(message)
            error = json.loads(ws.recv(timeout=30))
            assert error["type"] == "error" and error["field"] == field and words in error["message"], error
        ws.send(text("Buffered without an end"))
        ws.send(config(seed=2))
        error = json.loads(ws.recv(timeout=30))
        assert error["field"] == "type" and "while text is buffered" in error["message"]
        ws.send(DONE)
        events, audio = until(ws, "session.done")  # still speaking, with the first config
        assert events[-1]["total_sentences"] == 1 and audio


def test_an_utterance_is_bounded_by_the_text_limit_and_the_step_budget(server):
    with connect(ws_url(server)) as ws:
        ws.send(config(max_new_tokens=400))
        ws.send(text("x" * 20001))  # the server's text limit (20000 characters)
        error = json.loads(ws.recv(timeout=30))
        assert error["type"] == "error" and error["field"] == "text" and "20000" in error["message"]
        ws.send(text("Short. " * 90))  # 90 sentences x 400 steps > the 32768-step budget
        events = []
        while not events or events[-1]["type"] != "error":
            message = ws.recv(timeout=120)
            if not isinstance(message, bytes):
                events.append(json.loads(message))
        assert events[-1]["field"] == "max_new_tokens" and "32768" in events[-1]["message"]
        ws.send(CANCEL)  # the sentences queued before the refusal are dropped with the rest
        assert until(ws, "cancelled")[0][-1]["type"] == "cancelled"


def test_sessions_are_admitted_like_requests(guarded):
    headers = {"X-API-Key": "s3cret-key"}
    with connect(ws_url(guarded), additional_headers=headers), connect(ws_url(guarded), additional_headers=headers):
        with pytest.raises(InvalidStatus) as refused:
            connect(ws_url(guarded), additional_headers=headers)
        response = refused.value.response
        assert response.status_code == 503 and int(response.headers["Retry-After"]) > 0
        started = time.monotonic()
        assert requests.get(f"{guarded.url}/healthz", timeout=5).status_code == 200
        assert time.monotonic() - started < 1
    wait_until(lambda: _opens(guarded, headers), 10, "a session to be admitted again")


def _opens(srv, headers) -> bool:
    try:
        with connect(ws_url(srv), additional_headers=headers):
            return True
    except InvalidStatus:
        return False


def test_the_key_is_checked_before_the_handshake_and_never_logged(guarded):
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(guarded))
    assert refused.value.response.status_code == 401
    with connect(ws_url(guarded), additional_headers={"Authorization": "Bearer s3cret-key"}) as ws:
        ws.send(config())
        ws.send(text("Hi."))
        ws.send(DONE)
        until(ws, "session.done")
    # A browser cannot set headers: its key rides in a subprotocol entry, and the server answers with ours alone.
    with connect(ws_url(guarded), subprotocols=["higgs-audio", "higgs-api-key.s3cret-key"]) as ws:
        assert ws.subprotocol == "higgs-audio"
        ws.send(config())
    with pytest.raises(InvalidStatus) as wrong:
        connect(ws_url(guarded), subprotocols=["higgs-audio", "higgs-api-key.wrong"])
    assert wrong.value.response.status_code == 401
    assert "s3cret-key" not in guarded.log() and "higgs-api-key" not in guarded.log()


def test_a_page_from_another_origin_is_refused(guarded):
    headers = {"X-API-Key": "s3cret-key"}
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(guarded), additional_headers=headers, origin="https://evil.example")
    assert refused.value.response.status_code == 403
    with connect(ws_url(guarded), additional_headers=headers, origin="https://app.example") as ws:
        ws.send(config())


def test_an_idle_session_and_an_oversized_message_are_closed_with_a_reason(guarded):
    headers = {"X-API-Key": "s3cret-key"}
    with connect(ws_url(guarded), additional_headers=headers) as ws:
        ws.send(config())
        error = json.loads(ws.recv(timeout=10))  # nothing sent for the 1 s idle limit
        assert error["type"] == "error" and "idle" in error["message"]
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd.code == 1000 and "idle" in closed.value.rcvd.reason
    with connect(ws_url(guarded), additional_headers=headers) as ws:
        ws.send(text("x" * 5000))  # over the 4 KB message limit
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd.code == 1009


def test_metrics_count_sessions_first_audio_and_cancels(server):
    with connect(ws_url(server)) as ws:
        ws.send(config(max_new_tokens=400))
        ws.send(text("Count this one. "))
        until(ws, "audio.start")
        assert "higgs_realtime_sessions 1.0" in requests.get(f"{server.url}/metrics", timeout=5).text
        ws.send(CANCEL)
        until(ws, "cancelled")
    metrics = requests.get(f"{server.url}/metrics", timeout=5).text
    assert "higgs_realtime_first_audio_seconds_count" in metrics
    assert [line for line in metrics.splitlines() if line.startswith("higgs_realtime_cancels_total ")
            and float(line.split()[1]) >= 1]


def test_the_example_client_writes_what_it_heard(server, tmp_path):
    import subprocess
    import sys
    import wave

    from helpers import ROOT

    done = subprocess.run([sys.executable, str(ROOT / "examples" / "realtime_client.py"), "--url",
                           server.url.replace("http://", "ws://"), "--voice", "belinda", "--text",
                           "First sentence here. And a second one.", "--words-per-second", "40", "--max-new-tokens", "60",
                           "-o", "out.wav"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "speaking: First sentence here." in done.stdout and "2 sentence(s)" in done.stdout
    with wave.open(str(tmp_path / "out.wav")) as audio:
        assert audio.getframerate() == 24000 and audio.getnframes() > 24000


def test_agents_over_http_livekits_sse_mp3_and_pipecats_aliased_voice(server):
    """The official openai SDK against the real server, making the requests LiveKit's and Pipecat's OpenAI TTS
    services make: mp3 deltas over SSE, and an OpenAI voice name that an alias turns into one library voice."""
    import base64

    import av
    import openai

    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    with client.audio.speech.with_streaming_response.create(
            model="gpt-4o-mini-tts", voice="alloy", input="Hello from an agent.", response_format="mp3",
            stream_format="sse", extra_body={"max_new_tokens": 60, "seed": 1}) as response:
        events = [json.loads(line[5:]) for line in response.iter_lines() if line.startswith("data:")]
    mp3 = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    import io

    with av.open(io.BytesIO(mp3)) as container:
        assert container.format.name == "mp3" and sum(f.samples for f in container.decode(audio=0)) > 24000
    body = {"model": "tts-1", "input": "One voice.", "response_format": "wav",
            "extra_body": {"max_new_tokens": 40, "seed": 2}}
    assert client.audio.speech.create(voice="alloy", **body).content == \
        client.audio.speech.create(voice="belinda", **body).content
    # In a realtime session too: the alias clones its voice exactly as the voice's own name does.
    assert speak(server, ["Same voice here."], voice="alloy", seed=3)[1] == \
        speak(server, ["Same voice here."], voice="belinda", seed=3)[1]


# ---- clients written for vllm-omni and sglang-omni, unchanged ----------------------------------------------------
# What vllm-omni's examples/online_serving/qwen3_tts/streaming_speech_client.py sends with its default flags (the
# fields its argparse defaults fill in; None ones left out), and what it keeps: the binary frames between audio.start
# and audio.done, written as sentence_NNN.<response_format>.
VLLM_OMNI_DEFAULTS = {"voice": "Vivian", "task_type": "CustomVoice", "language": "Auto", "response_format": "wav",
                      "speed": 1.0}
BELINDA = EXAMPLES / "voice_prompts" / "belinda.wav"
PROFILE = "A male speaker with a deep, calm voice and a neutral American accent."  # profile:male_en


def vllm_omni_session(srv, text_: str, simulate_stt: bool = False, **flags) -> dict:
    """One session as vllm-omni's client runs it: session.config, the text (whole, or word by word as --simulate-stt
    sends it), input.done, then frames until session.done. Returns the events, the files it would write, the
    binary frames per sentence, and the close frame if the server closed instead."""
    config_ = {k: v for k, v in {**VLLM_OMNI_DEFAULTS, **flags}.items() if v is not None}
    result = {"events": [], "files": {}, "frames": {}, "close": None}
    with connect(ws_url(srv), max_size=None) as ws:
        ws.send(json.dumps({"type": "session.config", **config_}))
        words = text_.split(" ")
        for piece in ([w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)] if simulate_stt
                      else [text_]):
            ws.send(json.dumps({"type": "input.text", "text": piece}))
        ws.send(json.dumps({"type": "input.done"}))
        chunks: list[bytes] = []
        try:
            while True:
                message = ws.recv(timeout=120)
                if isinstance(message, bytes):
                    chunks.append(message)
                    continue
                event_ = json.loads(message)
                result["events"].append(event_)
                if event_["type"] == "audio.start":
                    chunks = []
                elif event_["type"] == "audio.done":
                    result["files"][event_["sentence_index"]] = b"".join(chunks)
                    result["frames"][event_["sentence_index"]] = len(chunks)
                elif event_["type"] == "session.done":
                    break
        except ConnectionClosed as closed:
            result["close"] = closed.rcvd
    return result


def first_message_refused(srv, message: str) -> tuple[dict, object]:
    """The error a first message gets, and the close frame that follows it."""
    with connect(ws_url(srv), max_size=None) as ws:
        ws.send(message)
        error = json.loads(ws.recv(timeout=30))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
    return error, closed.value.rcvd


def pcm_of(srv, text_: str, **fields) -> bytes:
    events, audio = speak(srv, [text_], **fields)
    return b"".join(audio[key] for key in sorted(audio))


def data_uri(path) -> str:
    return "data:audio/wav;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def test_vllm_omni_client_defaults_get_an_error_naming_our_voices_and_a_close(server):
    """Its default speaker (Vivian) is not a voice here: the client reads why, then the close ends its recv()."""
    result = vllm_omni_session(server, "Hello world. How are you?")
    [error] = result["events"]
    assert error["type"] == "error" and error["field"] == "voice"
    assert "unknown voice 'Vivian'" in error["message"] and "belinda" in error["message"]
    assert result["close"].code == 1008


def test_vllm_omni_client_writes_one_wav_file_per_sentence_that_plays(server):
    import soundfile as sf

    result = vllm_omni_session(server, "Hello world. How are you?", simulate_stt=True, voice="belinda",
                               max_new_tokens=40, seed=7)
    starts = [e for e in result["events"] if e["type"] == "audio.start"]
    assert [e["sentence_text"] for e in starts] == ["Hello world.", "How are you?"]
    assert all(e["format"] == "wav" and e["sample_rate"] == 24000 and e["channels"] == 1 for e in starts)
    assert result["events"][-1] == {"type": "session.done", "utterance_index": 0, "total_sentences": 2}
    dones = [e for e in result["events"] if e["type"] == "audio.done"]
    assert [d["total_bytes"] for d in dones] == [len(result["files"][i]) for i in range(2)]
    assert not any(d["error"] for d in dones) and result["frames"] == {0: 1, 1: 1}  # one complete file each
    pcm = pcm_of(server, "Hello world. How are you?", voice="belinda", seed=7)
    heard = b""
    for index in range(2):
        samples, rate = sf.read(io.BytesIO(result["files"][index]), dtype="int16")
        assert rate == 24000 and samples.ndim == 1 and samples.shape[0] > 0
        heard += samples.tobytes()
    assert heard == pcm  # the files hold exactly the audio the PCM stream carries


def test_vllm_omni_stream_audio_pcm_streams_chunks_and_says_their_shape(server):
    result = vllm_omni_session(server, "Hello world.", voice="belinda", response_format="pcm", stream_audio=True,
                               max_new_tokens=60)
    start = next(e for e in result["events"] if e["type"] == "audio.start")
    assert start["format"] == "pcm" and start["sample_rate"] == 24000 and start["channels"] == 1
    assert result["frames"][0] > 1 and len(result["files"][0]) % 2 == 0  # PCM16 chunks as they are made


@pytest.mark.parametrize("fmt", ["mp3", "flac", "opus", "aac"])
def test_every_format_is_a_complete_file_per_sentence(server, fmt):
    result = vllm_omni_session(server, "Hello world.", voice="belinda", response_format=fmt, max_new_tokens=40,
                               seed=3)
    rate, seconds = decode_audio(result["files"][0], fmt)
    expected = len(pcm_of(server, "Hello world.", voice="belinda", seed=3)) / 2 / 24000
    assert rate == 24000 and abs(seconds - expected) < 0.03, (fmt, seconds, expected)


def test_voice_design_and_base_clone_are_the_voices_they_describe_and_clone(server):
    """VoiceDesign: the voice described in instructions, as a profile of that text is; Base: a clone of the data:
    URI clip and its transcript, as the library voice of that clip is (the client's default speaker comes along and
    is not used). sglang-omni's spellings (speaker, references, a nested session object) mean the same."""
    words = "The same words, twice."
    designed = vllm_omni_session(server, words, task_type="VoiceDesign", instructions=PROFILE, response_format="pcm",
                                 max_new_tokens=40, seed=5)
    assert designed["files"][0] == pcm_of(server, words, voice="profile:male_en", seed=5)
    transcript = BELINDA.with_suffix(".txt").read_text().strip()
    cloned = vllm_omni_session(server, words, task_type="Base", ref_audio=data_uri(BELINDA), ref_text=transcript,
                               response_format="pcm", max_new_tokens=40, seed=5)
    belinda = pcm_of(server, words, voice="belinda", seed=5)
    assert cloned["files"][0] == belinda and len(data_uri(BELINDA)) > 128 * 1024  # over the text message limit
    sglang = {"type": "session.config", "session": {"references": [{"audio_path": data_uri(BELINDA),
                                                                    "text": transcript}],
                                                    "response_format": "pcm", "max_new_tokens": 40, "seed": 5}}
    with connect(ws_url(server), max_size=None) as ws:
        ws.send(json.dumps(sglang))
        ws.send(text(words))
        ws.send(DONE)
        assert until(ws, "session.done")[1][(0, 0)] == belinda
    assert pcm_of(server, words, speaker="belinda", seed=5) == belinda


def test_refused_configs_name_the_field_and_why_and_close_a_session_that_never_started(server):
    cases = [
        ({"x_vector_only_mode": True}, "x_vector_only_mode", "speaker-embedding"),
        ({"speaker_embedding": [0.1, 0.2]}, "speaker_embedding", "no speaker embedding"),
        ({"word_timestamps": True}, "word_timestamps", "forced aligner"),
        ({"task_type": "Base", "ref_audio": "https://example.com/clip.wav"}, "ref_audio", "does not fetch"),
        ({"task_type": "Base"}, "ref_audio", "clones ref_audio"),
        ({"task_type": "VoiceDesign"}, "instructions", "description"),
        ({"ref_audio": data_uri(BELINDA)}, "ref_audio", "task_type Base"),  # the client's CustomVoice default
        ({"response_format": "wav", "stream_audio": True}, "response_format", "pcm"),
        ({"split_granularity": "word"}, "split_granularity", "Must be one of"),
        ({"model": "Qwen/Qwen3-TTS-12Hz-1.7B-CustomVoice"}, "model", "unknown model"),
        ({"favourite_colour": "blue"}, "favourite_colour", "unknown field"),
    ]
    for fields, field, words in cases:
        error, close = first_message_refused(server, json.dumps({"type": "session.config", **VLLM_OMNI_DEFAULTS,
                                                                 "voice": "belinda", **fields}))
        assert error["type"] == "error" and error["field"] == field and words in error["message"], (fields, error)
        assert close.code == 1008 and close.reason, fields
    for first in (text("Hello."), "not json", json.dumps({"type": "input.cancel"})):
        error, close = first_message_refused(server, first)
        assert error["type"] == "error" and close.code == 1008
    # A later invalid config keeps the one before, and the server still serves.
    with connect(ws_url(server)) as ws:
        ws.send(config(voice="belinda", model="tts-1", language="English"))
        ws.send(json.dumps({"type": "session.config", "x_vector_only_mode": True}))
        assert json.loads(ws.recv(timeout=30))["field"] == "x_vector_only_mode"
        ws.send(text("Still here."))
        ws.send(DONE)
        events, audio = until(ws, "session.done")
        assert events[-1]["total_sentences"] == 1 and audio[(0, 0)]


def test_an_oversized_message_is_closed_with_1009_whatever_its_size(server):
    with connect(ws_url(server)) as ws:
        ws.send(config())
        ws.send(text("x" * 200_000))  # over the 128 KB limit of a message that is not a session.config
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
        assert closed.value.rcvd.code == 1009
    with connect(ws_url(server), max_size=None) as ws:
        ws.send(json.dumps({"type": "session.config", "ref_audio": "A" * (6 * 1024 * 1024)}))  # over 4 MB
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009  # a close frame, not a reset
    assert speak(server, ["Still serving."])[0][-1]["type"] == "session.done"


def test_session_close_closes_after_the_current_utterance(server):
    with connect(ws_url(server)) as ws:
        ws.send(config(seed=4))
        ws.send(text("First one here. And the second."))
        ws.send(DONE)
        ws.send(json.dumps({"type": "session.close"}))
        events = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                message = ws.recv(timeout=60)
                if not isinstance(message, bytes):
                    events.append(json.loads(message))
        assert [e["type"] for e in events if e["type"] != "audio.start"] == ["audio.done", "audio.done",
                                                                              "session.done"]
        assert closed.value.rcvd.code == 1000


def test_split_granularity_initial_chunk_and_speed(server):
    with connect(ws_url(server)) as ws:
        ws.send(config(split_granularity="clause", seed=6))
        ws.send(text("Hello there, friend. How are you?"))
        ws.send(DONE)
        events, _ = until(ws, "session.done")
        assert [e["sentence_text"] for e in events if e["type"] == "audio.start"] == ["Hello there,", "friend.",
                                                                                     "How are you?"]
    with connect(ws_url(server)) as ws:
        ws.send(config(split_granularity="none", seed=6))
        ws.send(text("Hello there, friend. How are you? "))
        ws.send(text("Fine."))
        ws.send(DONE)
        events, _ = until(ws, "session.done")
        assert [e["sentence_text"] for e in events if e["type"] == "audio.start"] == [
            "Hello there, friend. How are you? Fine."]
    for frames in (5, 7):  # the first PCM chunk holds that many frames (960 samples each)
        with connect(ws_url(server)) as ws:
            ws.send(config(voice="belinda", stream_audio=True, initial_codec_chunk_frames=frames))
            ws.send(text("Hello world. "))
            until(ws, "audio.start")
            assert len(ws.recv(timeout=60)) == frames * 960 * 2
    normal, fast = (len(pcm_of(server, "Hello world.", seed=8, speed=speed)) for speed in (1.0, 2.0))
    assert abs(fast / normal - 0.5) < 0.05  # tempo, pitch kept (as over HTTP)


def test_a_graceful_stop_closes_an_idle_session_with_1001_and_the_server_exits(tiny_checkpoint, tmp_path):
    """SIGTERM (systemctl stop) must not wait for an idle session's 120 s idle timeout: the session is closed as
    going away once it has nothing left to say, and the server exits."""
    srv = start_server(tiny_checkpoint, tmp_path, "--max-new-tokens", "400")
    try:
        with connect(ws_url(srv)) as ws:
            ws.send(config())
            ws.send(text("Before the stop. "))
            ws.send(DONE)
            until(ws, "session.done")
            srv.proc.terminate()  # gunicorn's graceful stop
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=30)
            assert closed.value.rcvd.code == 1001
        srv.proc.wait(timeout=30)
    finally:
        srv.stop()
