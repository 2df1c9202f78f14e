"""Start the Higgs Audio server (the spec's command): python api_server.py [--host ...] [--port ...] ...

Flags become HIGGS_* environment variables, then gunicorn (gthread workers) serves wsgi:app with
gunicorn.conf.py. Every flag can also be given as an environment variable (e.g. HIGGS_PORT=9000).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
from dataclasses import fields
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
# What the server cannot start without; requirements.txt has the full list (with versions).
NEEDED = ("gunicorn", "flask", "flask_smorest", "marshmallow", "torch", "transformers", "av", "soundfile")


def check_installed(python: str = sys.executable) -> None:
    """Refuse to start, before announcing anything, in a Python that lacks the server's packages (a bare `python`
    outside the project's virtual environment): gunicorn would otherwise fail after "Serving on ..."."""
    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if missing:
        raise SystemExit(
            f"{python} lacks the server's packages ({', '.join(missing)} not installed). Start it with `make run` "
            f"(creates .venv and installs requirements.txt), or run `.venv/bin/python api_server.py` once `make run` "
            f"or `make demo` has installed them.")


if __name__ == "__main__":
    check_installed()

from app.settings import Settings  # noqa: E402
from model_pool.defaults import QUANTIZATIONS  # noqa: E402


def parse_args(argv: list[str] | None = None) -> tuple[Settings, argparse.Namespace]:
    d = Settings.from_env()
    p = argparse.ArgumentParser(description="Higgs Audio v2 text-to-speech HTTP server")
    p.add_argument("--host", default=d.host, help="bind address (default %(default)s)")
    p.add_argument("--port", type=int, default=d.port, help="port (default %(default)s)")
    p.add_argument("--model-path", default=d.model_path, help="model directory or hub id")
    p.add_argument("--audio-tokenizer-path", default=d.audio_tokenizer_path, help="audio tokenizer dir or hub id")
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:N or mps (default %(default)s)")
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens, help="server maximum per request")
    p.add_argument("--voice-prompts-dir", default=d.voice_prompts_dir)
    p.add_argument("--scene-prompts-dir", default=d.scene_prompts_dir)
    p.add_argument("--reload", action="store_true", help="development: restart when code changes")
    p.add_argument("--workers", type=int, default=d.workers,
                   help="gunicorn worker processes on a CPU (each loads a pool); with --device auto and N GPUs there "
                        "are N workers, one per GPU")
    p.add_argument("--threads", type=int, default=d.threads,
                   help="threads per worker; at least the requests the pool admits (slots + queue) plus 8")
    p.add_argument("--instances-per-device", type=int, default=d.instances_per_device,
                   help="preloaded model instances per device in each worker")
    p.add_argument("--cpu-threads", type=int, default=d.cpu_threads,
                   help="torch threads per instance on CPU (0: the cores less one, split between instances)")
    p.add_argument("--max-batch-size", type=int, default=d.max_batch_size,
                   help="requests one instance decodes together: 0 (default), as many as the memory plan fits (at "
                        "most 64 on a GPU, 8 on a CPU); N, at most N; 1, no batching")
    p.add_argument("--compile", nargs="?", const="on", default=d.compile, choices=["auto", "on", "off"],
                   help="torch.compile of the decode step, CUDA graphs on GPUs, warmed up at load; auto (default): "
                        "on for CUDA, off for CPU; --compile alone means on")
    p.add_argument("--quantization", default=d.quantization, choices=QUANTIZATIONS,
                   help="the backbone's linear weights: none (default; bf16 on a GPU), int8 (any device, about half "
                        "the bytes), fp8 (GPUs with fp8: Ada, Hopper), int4 (CUDA GPUs, about a third)")
    p.add_argument("--queue-timeout", type=float, default=d.queue_timeout,
                   help="seconds a request may wait for a free instance")
    p.add_argument("--max-queue", type=int, default=d.max_queue, help="requests allowed to wait (0: 2x pool)")
    p.add_argument("--client-timeout", type=float, default=d.client_timeout,
                   help="seconds a client's socket may make no progress (a stalled stream reader is cut off)")
    p.add_argument("--max-context-tokens", type=int, default=d.max_context_tokens,
                   help="a request's prompt plus max_new_tokens (the KV cache of one batch slot)")
    p.add_argument("--cors-origins", default=d.cors_origins, help="comma-separated allowed origins, or *")
    p.add_argument("--log-file", default=d.log_file)
    p.add_argument("--api-key", default=d.api_key, help="require this key (Bearer or X-API-Key); or HIGGS_API_KEY")
    p.add_argument("--voice-aliases", default=d.voice_aliases,
                   help='names that clone a library voice, e.g. "alloy=belinda,echo=en_man" (OpenAI voice names '
                        "for agents that accept only those)")
    p.add_argument("--max-sessions", type=int, default=d.max_sessions,
                   help="realtime WebSocket sessions per worker (default %(default)s)")
    args = p.parse_args(argv)
    overrides = {f.name: getattr(args, f.name) for f in fields(Settings) if hasattr(args, f.name)}
    return Settings.from_env(overrides=overrides), args


def gunicorn_command(settings: Settings, reload: bool) -> list[str]:
    # No --chdir: relative paths (voices, scenes, log file, a local model) stay relative to where the user ran us.
    cmd = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py")]
    if reload:
        cmd.append("--reload")
    return cmd + ["wsgi:app"]


def main(argv: list[str] | None = None) -> int:
    settings, args = parse_args(argv)
    env = dict(os.environ)
    env.update(settings.environ())
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    # CPU inference runs several threads (the batch loop, stream decoding); OpenMP workers that spin while
    # waiting steal the cores from each other. Measured +25% aggregate frames/s on 2 cores with PASSIVE.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # Workers share metric files here so /metrics is the same whichever worker answers.
    env.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix=f"higgs-metrics-{settings.port}-"))
    os.makedirs(env["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
    cmd = gunicorn_command(settings, args.reload)
    print(f"Serving on http://{settings.host}:{settings.port} (model {settings.model_path}, "
          f"device {settings.device}); logs in {settings.log_file}", file=sys.stderr, flush=True)
    os.execve(sys.executable, cmd, env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
