"""Reference clips from clients: uploaded files (multipart) and clips sent inside JSON (vllm-omni's and
sglang-omni's `ref_audio`: a data: URI or base64; an http(s) URL only where the operator allows the server to fetch
it). Each is read within the upload size limit, then decoded by model_pool.audio's bounded decoding; nothing is
written to disk under a client's name, and no server path is ever read for a client."""

from __future__ import annotations

import base64
import binascii
import re
import urllib.error
import urllib.request
from urllib.parse import unquote_to_bytes, urlsplit

from model_pool.audio import FORMATS, decode_clip
from model_pool.errors import InvalidAudio
from model_pool.request import ReferenceClip

from .errors import PayloadTooLarge

FIELD = "ref_audio_file"
_BASE64 = re.compile(r"[A-Za-z0-9+/=_\-\s]+")
_URL_SCHEMES = ("http", "https")


def read_upload(storage, max_bytes: int, max_seconds: float, transcript: str | None = None,
                field: str = FIELD) -> ReferenceClip | None:
    """A werkzeug FileStorage (or None) -> ReferenceClip: mono samples at 24 kHz."""
    if storage is None:
        return None
    data = storage.stream.read(max_bytes + 1)
    return _clip(data, max_bytes, max_seconds, transcript, field)


def read_inline_clip(value: str, settings, transcript: str | None = None, field: str = "ref_audio") -> ReferenceClip:
    """A clip given as a string: `data:audio/wav;base64,...`, bare base64, or (with allow_ref_audio_urls) an http(s)
    URL, fetched within client_timeout. Any format uploads take; the same size and duration limits."""
    max_bytes = settings.max_upload_bytes
    value = value.strip()
    if not value:
        raise InvalidAudio(field, f"{field} is empty")
    scheme = urlsplit(value).scheme.lower() if ":" in value[:12] else ""
    if value.startswith("data:"):
        data = _data_uri(value, max_bytes, field)
    elif scheme in _URL_SCHEMES:
        if not settings.allow_ref_audio_urls:
            raise InvalidAudio(field, f"{field} is a URL, and this server does not fetch clips (the operator can allow "
                                      "it with HIGGS_ALLOW_REF_AUDIO_URLS): send the clip inline as a data: URI or "
                                      "base64")
        data = _fetch(value, max_bytes, settings.client_timeout, field)
    elif _BASE64.fullmatch(value):
        data = _base64(value, max_bytes, field)
    else:
        raise InvalidAudio(field, f"{field} must be a clip: a data: URI or base64 of a {FORMATS} file (the server "
                                  "reads no paths; to use a library voice, name it in voice)")
    return _clip(data, max_bytes, settings.max_upload_seconds, transcript, field)


def _clip(data: bytes, max_bytes: int, max_seconds: float, transcript: str | None, field: str) -> ReferenceClip:
    if len(data) > max_bytes:
        raise PayloadTooLarge(field, f"{field} is larger than the {max_bytes / (1024 * 1024):g} MB limit")
    if not data:
        raise InvalidAudio(field, f"{field} is empty")
    return ReferenceClip(decode_clip(data, field, max_seconds), (transcript or "").strip() or None)


def _too_large(encoded_chars: int, max_bytes: int, field: str) -> None:
    if encoded_chars * 3 // 4 > max_bytes + 3:  # base64 holds 3 bytes in 4 characters: refused before decoding
        raise PayloadTooLarge(field, f"{field} is larger than the {max_bytes / (1024 * 1024):g} MB limit")


def _base64(text: str, max_bytes: int, field: str) -> bytes:
    compact = "".join(text.split())
    _too_large(len(compact), max_bytes, field)
    try:
        altchars = b"-_" if ("-" in compact or "_" in compact) else None  # the URL-safe alphabet
        return base64.b64decode(compact, altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidAudio(field, f"{field} is neither a data: URI nor base64 of a {FORMATS} file (the server "
                                  "reads no paths; to use a library voice, name it in voice)") from None


def _data_uri(uri: str, max_bytes: int, field: str) -> bytes:
    head, comma, payload = uri.partition(",")
    if not comma:
        raise InvalidAudio(field, f"{field} is a data: URI without data (expected data:audio/wav;base64,...)")
    if head.lower().endswith(";base64"):
        return _base64(payload, max_bytes, field)
    return unquote_to_bytes(payload)  # percent-encoded: never larger than the message that carried it


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects are followed to http(s) URLs only (urllib would follow ftp:// too)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urlsplit(newurl).scheme.lower() not in _URL_SCHEMES:
            raise urllib.error.URLError("redirected to a URL that is not http(s)")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _fetch(url: str, max_bytes: int, timeout: float, field: str) -> bytes:
    opener = urllib.request.build_opener(_HttpOnlyRedirects())
    try:
        with opener.open(urllib.request.Request(url, headers={"User-Agent": "higgs-audio-server"}),
                         timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise PayloadTooLarge(field, f"{field} is larger than the {max_bytes / (1024 * 1024):g} MB limit")
            return response.read(max_bytes + 1)
    except urllib.error.HTTPError as exc:
        raise InvalidAudio(field, f"{field} could not be fetched: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise InvalidAudio(field, f"{field} could not be fetched: {str(reason)[:200]}") from None
