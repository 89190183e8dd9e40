"""Log output for the long-running processes: text, JSON lines, or journald fields.

``text``     the human form on stderr (the default at a terminal).
``json``     one JSON object per line on stderr: ``ts``, ``level``, ``logger``,
             ``msg``, the exception when there is one, and every ``extra=`` field.
             What log shippers (Vector, Fluent Bit, Loki's promtail) parse.
``journal``  journald's native protocol (systemd.journal-fields(7)): one datagram
             per record to ``/run/systemd/journal/socket`` with ``MESSAGE``,
             ``PRIORITY``, ``CODE_FILE``/``CODE_LINE``/``CODE_FUNC``,
             ``POWERNODE_LOGGER`` and every ``extra=`` field upper-cased, so
             ``journalctl -o json`` and ``journalctl POWERNODE_INSTANCE=…`` see
             them as fields, not as text to grep. Without a journal socket it
             falls back to ``json`` on stderr.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import struct
import sys
from datetime import UTC, datetime
from typing import Final

FORMATS: Final = ("text", "json", "journal")
JOURNAL_SOCKET: Final = "/run/systemd/journal/socket"

# LogRecord's own attributes: anything else on a record came from ``extra=``.
_RESERVED: Final = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_FIELD_OK = re.compile(r"[^A-Z0-9_]")
# syslog priorities (RFC 5424) by logging level, as journald expects them.
_PRIORITY: Final = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3}


def extras(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in vars(record).items() if k not in _RESERVED and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        for k, v in extras(record).items():
            doc.setdefault(k, v)
        return json.dumps(doc, default=str, ensure_ascii=False)


def journal_message(record: logging.LogRecord, formatter: logging.Formatter) -> bytes:
    """One record in journald's native datagram format.

    A value without a newline is ``KEY=value\\n``; one with a newline is the key,
    a newline, its length as a little-endian u64, the bytes and a newline.
    """
    fields: dict[str, str] = {
        "MESSAGE": record.getMessage(),
        "PRIORITY": str(_PRIORITY.get(record.levelno, 3 if record.levelno > 40 else 6)),
        "CODE_FILE": record.pathname,
        "CODE_LINE": str(record.lineno),
        "CODE_FUNC": record.funcName,
        "POWERNODE_LOGGER": record.name,
        "SYSLOG_IDENTIFIER": os.path.basename(sys.argv[0]) or "powernode",
    }
    if record.exc_info:
        fields["MESSAGE"] += "\n" + formatter.formatException(record.exc_info)
    for k, v in extras(record).items():
        name = _FIELD_OK.sub("_", k.upper()).lstrip("_")
        if name and name not in fields:
            fields["POWERNODE_" + name if not name.startswith("POWERNODE_") else name] = str(v)
    out = bytearray()
    for key, value in fields.items():
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


class JournalHandler(logging.Handler):
    def __init__(self, address: str = JOURNAL_SOCKET) -> None:
        super().__init__()
        self._address = address
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._fallback = logging.StreamHandler()
        self._fallback.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._sock.sendto(journal_message(record, logging.Formatter()), self._address)
        except OSError:  # journald gone, or a record over the datagram limit
            self._fallback.emit(record)

    def close(self) -> None:
        self._sock.close()
        super().close()


def configure(
    fmt: str = "text", *, level: int = logging.INFO, journal: str = JOURNAL_SOCKET
) -> None:
    """Route the root logger to ``fmt``; replaces handlers set up before."""
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: use one of {', '.join(FORMATS)}")
    handler: logging.Handler
    if fmt == "journal" and os.path.exists(journal):
        handler = JournalHandler(journal)
    elif fmt in ("json", "journal"):
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    reset()
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)


def reset() -> None:
    """Remove and close the root logger's handlers."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
