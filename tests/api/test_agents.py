"""Voice agents over HTTP: what LiveKit Agents' and Pipecat's OpenAI TTS services send, through the official
`openai` SDK (in-process, a WSGI transport). SSE in any format, stable voices under OpenAI's names, greedy repeats."""

from __future__ import annotations

import base64
import json

import openai
import pytest

from helpers import decode_audio, make_app, openai_sdk


@pytest.fixture(scope="module")
def agent(tmp_path_factory, engine):
    """The app with two aliases (one to a voice that does not exist) and the SDK an agent would use on it."""
    app = make_app(tmp_path_factory.mktemp("agents"), engine, voice_aliases="alloy=belinda,echo=no_such_voice")
    return app, openai_sdk(app)


def test_livekits_default_request_streams_mp3_deltas(agent):
    sdk = agent[1]
    """livekit-plugins-openai's defaults: gpt-4o-mini-tts with mp3 make it ask for stream_format sse and decode each
    delta as mp3; the deltas are base64 pieces of one mp3 stream."""
    with sdk.audio.speech.with_streaming_response.create(
            model="gpt-4o-mini-tts", voice="alloy", input="Hello from an agent.", response_format="mp3",
            stream_format="sse", extra_body={"max_new_tokens": 60, "seed": 1}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[5:]) for line in response.iter_lines() if line.startswith("data:")]
    deltas = [e for e in events if e["type"] == "speech.audio.delta"]
    assert len(deltas) >= 2 and events[-1]["type"] == "speech.audio.done"
    mp3 = b"".join(base64.b64decode(e["audio"]) for e in deltas)
    rate, seconds = decode_audio(mp3, "mp3")
    assert rate == 24000 and seconds > 1.0


@pytest.mark.parametrize("fmt", ["opus", "aac", "flac", "wav"])
def test_sse_deltas_carry_any_format(agent, fmt):
    sdk = agent[1]
    with sdk.audio.speech.with_streaming_response.create(
            model="tts-1", voice="belinda", input="Hello.", response_format=fmt, stream_format="sse",
            extra_body={"max_new_tokens": 40, "seed": 2}) as response:
        events = [json.loads(line[5:]) for line in response.iter_lines() if line.startswith("data:")]
    data = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    assert decode_audio(data, fmt)[1] > 0.5


def test_an_alias_clones_its_voice_exactly(agent):
    app, sdk = agent
    """Pipecat accepts only OpenAI's voice names: with alloy=belinda, every sentence is belinda's voice."""
    body = {"model": "tts-1", "input": "The same voice every time.", "response_format": "wav",
            "extra_body": {"max_new_tokens": 40, "seed": 4}}
    alloy = sdk.audio.speech.create(voice="alloy", **body).content
    belinda = sdk.audio.speech.create(voice="belinda", **body).content
    smart = sdk.audio.speech.create(voice="nova", **body).content  # no alias: the smart voice
    assert alloy == belinda and alloy != smart
    voices = {v["id"]: v for v in app.test_client().get("/v1/audio/voices").json["data"]}
    assert voices["alloy"] == {"id": "alloy", "object": "voice", "name": "alloy", "type": "alias", "voice": "belinda"}


def test_an_alias_to_a_missing_voice_says_so_when_used(agent):
    sdk = agent[1]
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.audio.speech.create(model="tts-1", voice="echo", input="Hi.", extra_body={"max_new_tokens": 20})
    assert "alias of 'no_such_voice'" in str(missing.value) and missing.value.body["param"] == "voice"


def test_temperature_zero_repeats_without_a_seed(agent):
    sdk = agent[1]
    body = {"model": "tts-1", "voice": "nova", "input": "Greedy and repeatable.", "response_format": "wav",
            "extra_body": {"temperature": 0, "max_new_tokens": 60}}
    assert sdk.audio.speech.create(**body).content == sdk.audio.speech.create(**body).content


def test_a_malformed_alias_list_is_refused_at_start_up(tmp_path, engine):
    with pytest.raises(SystemExit, match="ALIAS=VOICE"):
        make_app(tmp_path, engine, voice_aliases="alloy")
