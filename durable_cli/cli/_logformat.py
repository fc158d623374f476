"""`--log-format json`: one JSON object a line on stderr, for journald and log shippers.

Each line holds `time` (UTC, ISO 8601), `level`, `run_id`, `workflow`, `event` and `message`
(`run_id` and `workflow` are null when a record is not about one run). The records are the
command's own (a tick's run outcomes and errors, its summary, the server's start) and every
`logging` record of the process at INFO and above: `durable_cli.logger` records from workflow code
(with their run id and workflow) and uvicorn's.
"""

from __future__ import annotations

from typing import Any

LOGGER = "durable_cli.cli"


def json_line(record: Any, message: str) -> str:
    """A log record as one JSON object on one line."""
    import json
    from datetime import datetime, timezone

    return json.dumps({
        "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat().replace("+00:00", "Z"),
        "level": record.levelname.lower(),
        "run_id": getattr(record, "run_id", None),
        "workflow": getattr(record, "workflow", None),
        "event": getattr(record, "event", None) or record.name,
        "message": message,
    }, ensure_ascii=False, default=str)


def json_logging() -> Any:
    """Send every log record of the process to stderr as JSON lines; returns the `log` function
    a tick reports through (`log(level, event, message, run_id=..., workflow=...)`).

    `logging` is imported here, not at module level: a plain `durable tick` never loads it."""
    import logging
    import sys

    class JsonFormatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + self.formatException(record.exc_info)
            return json_line(record, message)

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logger = logging.getLogger(LOGGER)

    def log(level: str, event: str, message: str, run_id: str | None = None, workflow: str | None = None) -> None:
        logger.log(logging.getLevelName(level.upper()), message,
                   extra={"event": event, "run_id": run_id, "workflow": workflow})

    return log
