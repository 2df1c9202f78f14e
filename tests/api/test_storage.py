"""The voice library on a filesystem that refuses writes: a full disk (507), a read-only mount (503), a directory the
server's user may not write (403). Each answer says which, the log names the path, nothing half-written is left,
and reads and generation keep working. Real filesystems: a small tmpfs (Linux, as root), and a child process that
runs as `nobody` for the permission case."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from helpers import EXAMPLES, make_app


def wav(seconds: float = 1.0) -> bytes:
    t = np.arange(int(seconds * 24000)) / 24000
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 24000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def upload(client, name: str, overwrite: bool = False):
    form = {"name": name, "transcript": "Hello there.", "audio": (io.BytesIO(wav()), "clip.wav"),
            "overwrite": "true" if overwrite else "false"}
    return client.post("/voices", data=form, content_type="multipart/form-data")


@pytest.fixture
def tmpfs(tmp_path):
    """A 256 KB tmpfs holding a copy of two shipped voices; unmounted afterwards."""
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs Linux and root")
    mount = tmp_path / "mnt"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        voices = mount / "voices"
        voices.mkdir()
        for name in ("en_man",):
            for suffix in (".wav", ".txt", ".json"):
                if (EXAMPLES / "voice_prompts" / f"{name}{suffix}").exists():
                    shutil.copy(EXAMPLES / "voice_prompts" / f"{name}{suffix}", voices)
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def listing(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def still_serves(client) -> None:
    assert "en_man" in [v["name"] for v in client.get("/voices").json["voices"]]
    assert client.get("/voices/en_man/audio").status_code == 200
    r = client.post("/generate", json={"text": "Hi", "ref_audio": "en_man", "max_new_tokens": 20})
    assert r.status_code == 200, r.json


def test_a_full_disk_is_507_and_keeps_the_old_voice(tmp_path, engine, tmpfs):
    voices = tmpfs / "voices"
    client = make_app(tmp_path, engine, voice_prompts_dir=str(voices)).test_client()
    filler = tmpfs / "filler"
    with open(filler, "wb", buffering=0) as f:  # fill the disk to its last block
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    before = listing(voices)
    for name, overwrite in (("newcomer", False), ("en_man", True)):
        r = upload(client, name, overwrite)
        assert r.status_code == 507, r.json
        assert "disk is full" in r.json["message"] and str(tmpfs) not in r.json["message"]
        assert listing(voices) == before  # no half file, no staged file, the old voice untouched
    log = (tmp_path / "api_server.log").read_text()
    assert "StorageFull 507" in log and str(voices) in log and "WARNING" in log
    still_serves(client)


def test_a_read_only_library_is_503_and_still_serves(tmp_path, engine, tmpfs):
    voices = tmpfs / "voices"
    client = make_app(tmp_path, engine, voice_prompts_dir=str(voices)).test_client()
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    before = listing(voices)
    r = upload(client, "newcomer")
    assert r.status_code == 503 and "read-only" in r.json["message"], r.json
    assert "Retry-After" not in r.headers  # waiting will not make it writable
    d = client.delete("/voices/en_man")
    assert d.status_code == 503 and "read-only" in d.json["message"]
    assert listing(voices) == before
    log = (tmp_path / "api_server.log").read_text()
    assert "StorageReadOnly 503" in log and str(voices) in log
    still_serves(client)


def save_as_nobody(directory: Path) -> str:
    """Save a voice in a forked child that runs as `nobody` (the modules are already imported, so the child needs
    no access to the interpreter's files); returns what the child reports."""
    import pwd

    from model_pool.errors import StorageError
    from model_pool.prompt.library import VoiceLibrary

    nobody = pwd.getpwnam("nobody")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        report = "saved"
        try:
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            VoiceLibrary(directory).save("newcomer", np.zeros(2400, dtype=np.float32), 24000, "Hello.")
        except StorageError as exc:
            report = f"{type(exc).__name__} {exc.http_status} {exc.path} {exc.message}"
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            report = f"unexpected {exc!r}"
        os.write(write, report.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        report = pipe.read()
    os.waitpid(pid, 0)
    return report


def test_a_directory_the_server_may_not_write_is_403(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("runs the library as `nobody`, which needs root")
    voices = Path("/tmp") / f"higgs-voices-{uuid.uuid4().hex[:8]}"  # a directory nobody can reach but not write
    voices.mkdir(mode=0o755)
    try:
        kind, status, path, *message = save_as_nobody(voices).split()
        assert (kind, status) == ("StorageForbidden", "403") and path.startswith(str(voices)), (kind, status, path)
        assert "may not write" in " ".join(message) and list(voices.iterdir()) == []
    finally:
        shutil.rmtree(voices)
