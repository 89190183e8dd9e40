"""Keyset cursors for newest-first lists: ``<microseconds since the epoch>|<row id>``.

The next page is the rows strictly after the previous page's last (time
descending, id ascending), so page 200 costs what page 1 does, and rows
inserted meanwhile shift nothing. The cursor is digits and an id, so the REST
schema can state exactly which strings are cursors (:data:`PATTERN`): one
that matches always parses.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from powernode.platform.problems import InvalidInputError

PATTERN = r"^[0-9]{1,17}\|[0-9a-f-]{1,36}$"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def cursor(at: datetime, row_id: str) -> str:
    return f"{(at - _EPOCH) // _US}|{row_id}"


def parse_cursor(after: str) -> tuple[datetime, str] | None:
    """The (time, id) of ``after``; None for the first page (empty)."""
    if not after:
        return None
    if not re.fullmatch(PATTERN, after):
        raise InvalidInputError(
            f"cursor {after!r}: not one this list gave (use its 'next' as it is)", field="after"
        )
    micros, _, row_id = after.partition("|")
    return _EPOCH + int(micros) * _US, row_id
