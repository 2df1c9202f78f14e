"""Logs go to api_server.log (rotating) and stderr. One line per request; tracebacks only in the file.

Log lines cannot be forged: every message is escaped (control characters, newlines, ANSI escapes become \\n, \\x1b
...), so a path with %0A or a field with a newline stays on its own line. Traceback lines in the file are indented
with "  | ", so nothing inside one can pass for a log line either.
"""

from __future__ import annotations

import logging
import logging.handlers
import re
import sys

_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
_configured: set[str] = set()
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape(text: str) -> str:
    return _CONTROL.sub(lambda m: _NAMED.get(m.group(), f"\\x{ord(m.group()):02x}"), text)


class EscapingFormatter(logging.Formatter):
    """One line per record, whatever its message holds; a traceback (when kept) follows, fenced."""

    def __init__(self, fmt: str, tracebacks: bool):
        super().__init__(fmt)
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        line = self.formatMessage(_escaped(record, self))
        if self.tracebacks and (record.exc_info or record.exc_text):
            text = record.exc_text or self.formatException(record.exc_info)
            line += "".join(f"\n  | {_CONTROL.sub(lambda m: escape(m.group()), part)}" for part in
                            text.splitlines())
        return line


def _escaped(record: logging.LogRecord, formatter: logging.Formatter) -> logging.LogRecord:
    clone = logging.makeLogRecord(record.__dict__)
    clone.message = escape(record.getMessage())
    clone.asctime = formatter.formatTime(record)
    return clone


class QuietGunicorn(logging.Filter):
    """gunicorn logs two outcomes the app has already logged, with a traceback on stderr: a client that stopped
    reading (our socket timeout) and a stream aborted after its first byte (StreamAborted). Each becomes one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, TimeoutError):
            record.msg = "a client made no progress within the client timeout: connection closed"
        elif error is not None and type(error).__name__ == "StreamAborted":
            record.msg = "a streamed response was aborted after its first byte (see the app's log line)"
        else:
            return True
        record.args, record.exc_info, record.exc_text = (), None, None
        record.levelno, record.levelname = logging.INFO, "INFO"
        return True


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
        file_handler.setFormatter(EscapingFormatter(_FORMAT, tracebacks=True))
        root.addHandler(file_handler)
    if not any(getattr(h, "_higgs_stderr", False) for h in root.handlers):
        stderr = logging.StreamHandler(sys.stderr)
        stderr.setFormatter(EscapingFormatter(_FORMAT, tracebacks=False))
        stderr._higgs_stderr = True
        root.addHandler(stderr)
    for noisy in ("urllib3", "httpx", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    gunicorn_errors = logging.getLogger("gunicorn.error")
    if not any(isinstance(f, QuietGunicorn) for f in gunicorn_errors.filters):
        gunicorn_errors.addFilter(QuietGunicorn())
