"""Logs go to api_server.log (rotating) and stderr. One line per request; tracebacks only in the log."""

from __future__ import annotations

import logging
import logging.handlers
import sys

_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
_configured: set[str] = set()


class _NoTracebacks(logging.Formatter):
    def format(self, record):
        saved = record.exc_info, record.exc_text
        record.exc_info, record.exc_text = None, None
        try:
            return super().format(record)
        finally:
            record.exc_info, record.exc_text = saved


def configure(log_file: str | None, level: str = "INFO") -> None:
    root = logging.getLogger()
    root.setLevel(level.upper())
    key = f"{log_file}|{level}"
    if key in _configured:
        return
    _configured.add(key)
    if log_file:
        file_handler = logging.handlers.RotatingFileHandler(log_file, maxBytes=20 * 1024 * 1024, backupCount=5,
                                                            encoding="utf-8", delay=True)
        file_handler.setFormatter(logging.Formatter(_FORMAT))
        root.addHandler(file_handler)
    if not any(getattr(h, "_higgs_stderr", False) for h in root.handlers):
        stderr = logging.StreamHandler(sys.stderr)
        stderr.setFormatter(_NoTracebacks(_FORMAT))
        stderr._higgs_stderr = True
        root.addHandler(stderr)
    for noisy in ("urllib3", "httpx", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
