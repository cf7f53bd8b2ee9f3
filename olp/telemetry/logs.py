"""Logs: every record redacted at creation (secret values and tokens masked, long messages cut
unless the `log_prompts` debug flag is on), JSON lines carrying the current trace and span ids."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace

log = logging.getLogger("olp.telemetry")


_SECRET_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{6,}"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{12,}"),
    re.compile(r"(?i)((?:api[_-]?key|token|password|secret)[\"']?\s*[:=]\s*[\"']?)[^\s\"',;&]{4,}"),
]
MAX_LOG_CHARS = 2000
"""Longer log messages are cut: prompts and transcripts never reach logs whole by accident."""


@dataclass
class Redaction:
    """What the process's log records are cleaned of. The log record factory is process-wide, so
    there is one of these, installed once (`install_log_redaction`) and updated in place."""

    secrets: tuple[str, ...] = ()
    log_prompts: bool = False
    """The debug flag: messages are not cut (prompts and answers reach the logs whole)."""
    installed: bool = False

    def clean(self, message: str) -> str:
        return redact(message, self.secrets, None if self.log_prompts else MAX_LOG_CHARS)


_redaction = Redaction()


def redact(text: str, secrets: Iterable[str] = (), max_chars: int | None = MAX_LOG_CHARS) -> str:
    """`text` with known secret values and secret-looking tokens masked, cut to `max_chars`."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "***", text)
    if max_chars is not None and len(text) > max_chars:
        text = f"{text[:max_chars]}... [{len(text) - max_chars} chars cut]"
    return text


def install_log_redaction(secrets: Iterable[str] = (), log_prompts: bool = False) -> Redaction:
    """Redact every log record at creation, whatever handlers Faust or aiohttp install later:
    secret values and tokens are masked; messages are cut to MAX_LOG_CHARS unless
    `log_prompts` (the debug flag) is on. Adds trace_id/span_id to records for correlation."""
    _redaction.secrets = tuple(s for s in secrets if s)
    _redaction.log_prompts = bool(log_prompts)
    if not _redaction.installed:
        _redaction.installed = True
        logging.setLogRecordFactory(_redacting_factory(logging.getLogRecordFactory(), _redaction))
    return _redaction


def _redacting_factory(
    base: Callable[..., logging.LogRecord], redaction: Redaction
) -> Callable[..., logging.LogRecord]:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = base(*args, **kwargs)
        try:
            message = record.getMessage()
            cleaned = redaction.clean(message)
            if cleaned != message:
                # () not None: mode's formatter (Faust workers) turns None into (None,) and
                # then fails to format the already formatted message ("not all arguments converted").
                record.msg, record.args = cleaned, ()
            span_context = trace.get_current_span().get_span_context()
            if span_context.is_valid:
                record.trace_id = format(span_context.trace_id, "032x")
                record.span_id = format(span_context.span_id, "016x")
        except Exception:  # a record that cannot be formatted is left as it is
            pass
        return record

    return factory


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, trace ids, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("trace_id", "span_id"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info), _redaction.secrets, 8000)
        return json.dumps(entry, ensure_ascii=False)


def logging_config(level: str = "INFO", json_format: bool = True) -> dict[str, Any]:
    """A `logging.config.dictConfig` dict (also what `faust.Worker(logging_config=...)` takes):
    one stderr handler, JSON lines by default."""
    formatter = (
        {"()": f"{JsonFormatter.__module__}.JsonFormatter"}
        if json_format
        else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "default"}},
        "root": {"level": level.upper(), "handlers": ["stderr"]},
    }


def configure_logging(
    level: str = "INFO", json_format: bool = True, secrets: Iterable[str] = (), log_prompts: bool = False
) -> None:
    """Structured, redacted logs for a process (entry points call it once)."""
    import logging.config

    install_log_redaction(secrets, log_prompts)
    logging.config.dictConfig(logging_config(level, json_format))
