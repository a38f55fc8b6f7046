"""Structured logging: one JSON object per line on stdout (or console lines for humans).

structlog loggers and stdlib loggers (aiohttp, kubernetes_asyncio, ...) share one stdout handler
and one renderer, so every line has the same shape. The operator's own loggers (named
``dittofs_controller...``) log at the configured level; libraries only at WARNING and above.
Values under secret-looking keys are redacted before rendering, as defence in depth.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from dittofs_controller.settings import LogFormat, LogLevel

PROJECT_LOGGER = "dittofs_controller"
REDACTED = "[redacted]"

_LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
# Matched against the key with '-' normalised to '_', so HTTP header names are covered too.
_SECRET_KEY = re.compile(
    r"password|passwd|passphrase|token|secret|authorization|cookie|credential|apikey|_key$",
    re.IGNORECASE,
)


def is_secret_key(key: str) -> bool:
    """Whether a log key names something that must never be logged in clear."""
    return bool(_SECRET_KEY.search(key.replace("-", "_")))


def _redact_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            key: REDACTED if isinstance(key, str) and is_secret_key(key) else _redact_value(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_redact_value(item) for item in value]
    if isinstance(value, tuple):  # kept a tuple: renderers recognise exc_info tuples
        return tuple(_redact_value(item) for item in value)
    return value


def redact_secrets(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """structlog processor: replace values of secret-looking keys, at any nesting depth."""
    redacted: EventDict = _redact_value(event_dict)
    return redacted


class _StdoutHandler(logging.Handler):
    """Writes each line to whatever sys.stdout is at emit time, flushed so none sit in a buffer.

    Resolving stdout late keeps redirection (and pytest's capture) working after configuration.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stdout.write(self.format(record) + "\n")
            sys.stdout.flush()
        except Exception:
            self.handleError(record)


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def formatter(fmt: LogFormat = "json") -> logging.Formatter:
    """The formatter that renders every line (redaction included): tests that capture log
    records render them with it to see exactly what would be printed."""
    renderer: list[Processor]
    if fmt == "json":
        renderer = [
            structlog.processors.format_exc_info,
            redact_secrets,
            structlog.processors.JSONRenderer(),
        ]
    elif fmt == "console":
        renderer = [redact_secrets, structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())]
    else:
        raise ValueError(f"unknown log format {fmt!r}")
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
    )


def configure_logging(level: LogLevel = "info", fmt: LogFormat = "json") -> None:
    """Configure structlog and stdlib logging; calling it again replaces the previous setup."""
    if level not in _LEVELS:
        raise ValueError(f"unknown log level {level!r}")
    handler = _StdoutHandler()
    handler.setFormatter(formatter(fmt))
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: loggers created at import time must follow a later (re)configuration.
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StdoutHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(logging.WARNING, _LEVELS[level]))
    logging.getLogger(PROJECT_LOGGER).setLevel(_LEVELS[level])
