"""Start `python api_server.py` (real gunicorn) on a free loopback port: for end-to-end tests and benchmarks."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str):
    """Poll an external process's state (a server we cannot hand an event to) until predicate() is truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def get_json(url: str, path: str, **kwargs):
    try:
        return requests.get(f"{url}{path}", timeout=5, **kwargs).json()
    except (requests.RequestException, ValueError):
        return None


def sse_events(lines, until: str | None = None) -> list[str]:
    """Event names from an iterator of SSE lines, stopping after the first `until` event (or at the end)."""
    events = []
    for line in lines:
        if line.startswith("event:"):
            events.append(line[6:].strip())
            if events[-1] == until:
                break
    return events


@dataclass
class Server:
    url: str
    port: int
    proc: subprocess.Popen
    log_dir: Path
    workers: int = 1

    def wait_ready(self, ready_path: str = "/readyz", timeout: float = 120) -> Server:
        """Wait until every worker has loaded the model; a server that never does is stopped."""
        def ready():
            if self.proc.poll() is not None:
                return True
            try:
                return requests.get(f"{self.url}{ready_path}", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        try:
            wait_until(ready, timeout, "the server to load the model")
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {(self.log_dir / 'stderr.log').read_text()[-3000:]}")
            # /readyz answers for whichever worker takes the connection: wait until every worker has loaded.
            wait_until(lambda: self.log().count("models ready") >= self.workers, timeout,
                       "every worker to load the model")
        except BaseException:
            self.stop(wait=False)  # a server that never became ready must not run beside the rest of the session
            raise
        return self

    def log(self) -> str:
        path = self.log_dir / "api_server.log"
        return path.read_text() if path.exists() else ""

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(p) for p in children.read_text().split()] if children.exists() else []

    def stop(self, wait: bool = True) -> None:
        """SIGTERM: gunicorn's graceful stop. wait=False (a fixture's teardown) returns at once: gunicorn's worker
        takes 2-3 s to notice and unwind, which the next server's start overlaps; start_server, once it has launched
        its own process, and the end of the session wait for (or kill) every server stopped this way."""
        if self.proc.poll() is None:
            self.proc.terminate()
            _STOPPING.append(self.proc)
        if wait:
            reap_stopped()


_STOPPING: list[subprocess.Popen] = []  # servers told to stop whose exit nobody has waited for yet


def reap_stopped(timeout: float = 60) -> None:
    while _STOPPING:
        proc = _STOPPING.pop()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


atexit.register(reap_stopped)


def start_server(checkpoint: Path, log_dir: Path, *extra: str, env: dict | None = None,
                 ready_path: str = "/readyz", device: str = "cpu", timeout: float = 120,
                 examples: bool = True) -> Server:
    """`python api_server.py` with the checkpoint, once it has loaded (launch_server, then wait_ready)."""
    return launch_server(checkpoint, log_dir, *extra, env=env, device=device, examples=examples).wait_ready(
        ready_path, timeout)


def launch_server(checkpoint: Path, log_dir: Path, *extra: str, env: dict | None = None, device: str = "cpu",
                  examples: bool = True) -> Server:
    """The server's process, started: servers launched one after another load side by side (the second core is
    otherwise idle while one starts). It runs in log_dir (not the project's directory). examples: the shipped voice
    and scene directories given explicitly; False: the server finds them itself, as `cd /srv && python
    .../api_server.py` does."""
    port = free_port()
    cmd = [sys.executable, str(ROOT / "api_server.py"), "--host", "127.0.0.1", "--port", str(port),
           "--model-path", str(checkpoint / "model"), "--audio-tokenizer-path", str(checkpoint / "audio_tokenizer"),
           "--device", device, "--log-file", str(log_dir / "api_server.log")]
    if examples:
        cmd += ["--voice-prompts-dir", str(EXAMPLES / "voice_prompts"), "--scene-prompts-dir",
                str(EXAMPLES / "scene_prompts")]
    cmd += extra
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PROMETHEUS_MULTIPROC_DIR": str(log_dir / "metrics"),
                **(env or {})}
    # stderr goes to a file: an unread pipe fills up after 64 KB of log lines and then blocks the server.
    stderr = open(log_dir / "stderr.log", "w")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd, cwd=log_dir, env=full_env, stdout=subprocess.DEVNULL, stderr=stderr)
    stderr.close()
    reap_stopped()  # while this one starts: no server still stopping once this one is ready
    workers = int(extra[extra.index("--workers") + 1]) if "--workers" in extra else 1
    return Server(f"http://127.0.0.1:{port}", port, proc, log_dir, workers)


@contextmanager
def ready_together(launched: dict[str, Server]):
    """Servers launched one after another (they load side by side), each waited for; stopped without waiting at
    the end (a module fixture's `with ready_together({...}) as servers: yield servers`)."""
    try:
        yield {name: server.wait_ready() for name, server in launched.items()}
    finally:
        for server in launched.values():
            server.stop(wait=False)


NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def render_nginx_conf(site: str, listen: int, upstreams: list[int], prefix: Path) -> str:
    """deploy/nginx.conf as shipped, pointed at our ports, inside a minimal main config under `prefix`."""
    upstream = re.search(r"upstream higgs_audio \{(.*?)\}", site, re.S)
    servers = "".join(f"\n    server 127.0.0.1:{port};" for port in upstreams)
    body = re.sub(r"\n\s*server 127\.0\.0\.1:\d+;", "", upstream.group(1))  # the shipped (active) entries
    site = site.replace(upstream.group(1), servers + body)
    site, count = re.subn(r"listen 80;", f"listen 127.0.0.1:{listen};", site)
    assert count == 1, "deploy/nginx.conf should have one `listen 80;`"
    user = "user root;" if os.geteuid() == 0 else ""
    return f"""
daemon off;
worker_processes 1;
{user}
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
{site}
}}
"""


@contextmanager
def nginx_in_front(upstreams: list[int], prefix: Path):
    """Debian's nginx running the shipped deploy/nginx.conf in front of these ports; yields its address."""
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(render_nginx_conf((ROOT / "deploy" / "nginx.conf").read_text(), port, upstreams, prefix))
    command = [NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    subprocess.run([*command, "-t"], check=True, capture_output=True)
    nginx = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _ready(url), 30, "nginx to proxy to the server")
        yield url
    finally:
        nginx.terminate()
        nginx.wait(30)


def _ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/readyz", timeout=2).status_code == 200
    except requests.RequestException:
        return False
