"""/v1/audio/speech with the fields vllm-omni's and sglang-omni's clients send (task_type, instructions as a voice
design, ref_audio + ref_text or references, speaker, language, initial_codec_chunk_frames), driven by the official
openai SDK as those clients' extra fields (extra_body); and clips sent inline, read within the upload limits."""

from __future__ import annotations

import base64
import functools
import http.server
import json
import threading

import openai
import pytest

from app.settings import Settings
from app.uploads import read_inline_clip
from helpers import EXAMPLES, make_app, openai_sdk
from model_pool.errors import InvalidAudio, InvalidRequest

BELINDA = EXAMPLES / "voice_prompts" / "belinda.wav"
TRANSCRIPT = BELINDA.with_suffix(".txt").read_text().strip()
PROFILE = "A male speaker with a deep, calm voice and a neutral American accent."  # profile:male_en
GREEDY = {"temperature": 0, "max_new_tokens": 40}


@pytest.fixture(scope="module")
def app(tmp_path_factory, engine):
    return make_app(tmp_path_factory.mktemp("omni"), engine, max_upload_mb=20.0, max_upload_seconds=30.0)


@pytest.fixture(scope="module")
def sdk(app):
    return openai_sdk(app)


def pcm(sdk, voice="belinda", **extra) -> bytes:
    return sdk.audio.speech.create(model="higgs-audio-v2", input="The same words.", voice=voice,
                                   response_format="pcm", instructions=extra.pop("instructions", None),
                                   extra_body={**GREEDY, **extra}).content


def _error(exc: openai.APIStatusError) -> dict:
    """OpenAI's error object, {"message", "type", "param", "code"}, as the SDK kept it."""
    body = exc.body if isinstance(exc.body, dict) else {}
    return body.get("error", body)


def data_uri() -> str:
    return "data:audio/wav;base64," + base64.b64encode(BELINDA.read_bytes()).decode("ascii")


def test_voice_design_speaks_in_the_described_voice(sdk):
    designed = pcm(sdk, "Vivian", task_type="VoiceDesign", instructions=PROFILE, language="Auto")
    assert designed == pcm(sdk, "profile:male_en") != pcm(sdk, "belinda")


def test_base_clones_an_inline_clip_as_the_library_voice_of_that_clip(sdk):
    belinda = pcm(sdk, "belinda")
    assert pcm(sdk, "Vivian", task_type="Base", ref_audio=data_uri(), ref_text=TRANSCRIPT) == belinda
    bare = base64.b64encode(BELINDA.read_bytes()).decode("ascii")  # bare base64; Base is implied by ref_audio
    assert pcm(sdk, None, ref_audio=bare, ref_text=TRANSCRIPT, language="English") == belinda
    assert pcm(sdk, None, references=[{"audio_path": data_uri(), "text": TRANSCRIPT}]) == belinda  # sglang-omni
    assert pcm(sdk, None, speaker="belinda") == belinda
    assert pcm(sdk, "default") == pcm(sdk, None)  # sglang-omni's default voice: the smart voice


def test_the_first_streamed_piece_has_the_frames_asked_for(sdk):
    for frames in (5, 9):
        with sdk.audio.speech.with_streaming_response.create(
                model="tts-1", input="Hello there.", voice="belinda", response_format="pcm", stream_format="sse",
                extra_body={**GREEDY, "initial_codec_chunk_frames": frames}) as response:
            deltas = [json.loads(line[5:]) for line in response.iter_lines() if line.startswith("data:")]
        assert len(base64.b64decode(deltas[0]["audio"])) == frames * 960 * 2


@pytest.mark.parametrize("extra, field, words", [
    ({"x_vector_only_mode": True}, "x_vector_only_mode", "speaker-embedding"),
    ({"repetition_penalty": 1.1}, "repetition_penalty", "no repetition penalty"),
    ({"references": [{"vq_codes": [1, 2]}]}, "references", "audio tokenizer"),
    ({"task_type": "Base"}, "ref_audio", "clones ref_audio"),
    ({"task_type": "VoiceDesign"}, "instructions", "description"),
    ({"ref_audio": "/etc/passwd"}, "ref_audio", "reads no paths"),
    ({"ref_audio": "https://example.com/a.wav"}, "ref_audio", "does not fetch"),
    ({"ref_text": "Words."}, "ref_text", "transcript of ref_audio"),
    ({"speaker": "en_man"}, "speaker", "another name for voice"),
    ({"task_type": "Clone"}, "task_type", "Must be one of"),
])
def test_what_has_no_meaning_here_is_refused_by_name(sdk, extra, field, words):
    with pytest.raises(openai.APIStatusError) as refused:
        pcm(sdk, "belinda", **extra)
    error = _error(refused.value)
    assert refused.value.status_code in (400, 422) and error["param"] == field and words in error["message"], error


def test_neutral_values_of_foreign_fields_pass(sdk):
    assert pcm(sdk, x_vector_only_mode=False, repetition_penalty=1.0, stage_params={}, word_timestamps=False) == \
        pcm(sdk)


def test_an_unknown_voice_names_some_voices_when_none_is_close(sdk):
    with pytest.raises(openai.NotFoundError) as refused:
        pcm(sdk, "Vivian")
    message = _error(refused.value)["message"]
    assert "unknown voice 'Vivian'" in message and "belinda" in message and "/v1/audio/voices" in message


# ---- clips sent inline ---------------------------------------------------------------------------------------------
@pytest.fixture
def clip_server(tmp_path):
    """A local web server with the clip, and a redirect to an ftp: URL (urllib would follow it)."""
    (tmp_path / "clip.wav").write_bytes(BELINDA.read_bytes())

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            if self.path == "/elsewhere":
                self.send_response(302)
                self.send_header("Location", "ftp://example.com/clip.wav")
                self.end_headers()
                return
            super().do_GET()

        def log_message(self, *args):
            pass

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            pass  # the server reads no more than its limit, then hangs up: the rest of the clip cannot be sent

    httpd = Server(("127.0.0.1", 0), functools.partial(Handler, directory=str(tmp_path)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_a_url_is_fetched_only_where_the_operator_allows_it(clip_server):
    closed = Settings.from_env(environ={})
    with pytest.raises(InvalidAudio, match="does not fetch"):
        read_inline_clip(f"{clip_server}/clip.wav", closed)
    allowed = Settings.from_env(environ={"HIGGS_ALLOW_REF_AUDIO_URLS": "1"})
    fetched = read_inline_clip(f"{clip_server}/clip.wav", allowed, "words")
    inline = read_inline_clip(data_uri(), closed, "words")
    assert (fetched.samples == inline.samples).all() and fetched.transcript == "words"
    for url, words in ((f"{clip_server}/missing.wav", "HTTP 404"), (f"{clip_server}/elsewhere", "not http")):
        with pytest.raises(InvalidAudio, match=words):
            read_inline_clip(url, allowed)
    small = Settings.from_env(environ={"HIGGS_ALLOW_REF_AUDIO_URLS": "1", "HIGGS_MAX_UPLOAD_MB": "0.1"})
    for value in (f"{clip_server}/clip.wav", data_uri()):
        with pytest.raises(InvalidRequest, match="larger than") as refused:
            read_inline_clip(value, small)
        assert refused.value.http_status == 413


@pytest.mark.parametrize("value, words", [
    ("belinda", "reads no paths"),
    ("/etc/passwd", "reads no paths"),
    ("data:audio/wav;base64", "without data"),
    ("data:audio/wav;base64,AAAA", "not a readable audio file"),
    ("file:///etc/passwd", "reads no paths"),
    ("", "empty"),
])
def test_an_inline_clip_that_is_not_one_is_refused(value, words):
    with pytest.raises(InvalidAudio, match=words) as refused:
        read_inline_clip(value, Settings.from_env(environ={}))
    assert refused.value.field == "ref_audio"
