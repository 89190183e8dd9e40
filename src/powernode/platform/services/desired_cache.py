"""A bounded in-process cache of desired sets, keyed by what they are computed from.

A desired set (resolve + compose) reads every version's manifest and file
list: tens of milliseconds for a template of 30 modules. Agents ask for it
on every sync and operators on every drift report, so it is cached — but
never invalidated by hooks (another process, a migration or a direct SQL
fix would slip past them). Instead every lookup first runs one narrow query
over the columns the computation depends on and hashes them: the
*fingerprint*. Versions are immutable after registration except for their
promotion state and digest (their manifest and file list are written once,
services/catalog.py and ingest.py), so a version's id stands for its
manifest and file list; modules, categories and the template's assignments
contribute every column the resolution and priorities read.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

from sqlalchemy import select

from powernode.platform.db import (
    NodeModule,
    NodeModuleAssignment,
    NodeModuleCategory,
    NodeModuleVersion,
    NodeTemplate,
)
from powernode.platform.services.context import Ctx

if TYPE_CHECKING:
    from powernode.platform.services.desired import DesiredSet

MAX_ENTRIES = 64

CacheKey = tuple[str, str, str, frozenset[str], frozenset[str], str]


def fingerprint(ctx: Ctx, template: NodeTemplate) -> str:
    """A digest of every column the template's desired set depends on."""
    versions = ctx.session.execute(
        select(
            NodeModuleVersion.id,
            NodeModuleVersion.promotion_state,
            NodeModuleVersion.composefs_digest,
            NodeModule.id,
            NodeModule.name,
            NodeModule.variety,
            NodeModule.parent_module_id,
            NodeModuleCategory.position,
        )
        .join(NodeModuleVersion.module)
        .join(NodeModule.category)
        .where(NodeModule.account == ctx.actor.account)
    ).all()
    assignments = ctx.session.execute(
        select(
            NodeModuleAssignment.module_id,
            NodeModuleAssignment.priority,
            NodeModuleAssignment.effective_priority,
        ).where(NodeModuleAssignment.template_id == template.id)
    ).all()
    h = hashlib.sha256()
    for part in (sorted(map(tuple, versions), key=repr), sorted(map(tuple, assignments), key=repr)):
        h.update(repr(part).encode())
        h.update(b"\0")
    return h.hexdigest()


class DesiredCache:
    """LRU of desired sets; safe to share between the API's worker threads."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._max = max_entries
        self._entries: OrderedDict[CacheKey, DesiredSet] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: CacheKey) -> DesiredSet | None:
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return found

    def put(self, key: CacheKey, value: DesiredSet) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


CACHE = DesiredCache()


def cache_key(
    ctx: Ctx,
    template: NodeTemplate,
    allowed_states: frozenset[str],
    held_back: frozenset[str] = frozenset(),
) -> CacheKey:
    return (
        ctx.actor.account,
        template.id,
        template.name,
        allowed_states,
        held_back,
        fingerprint(ctx, template),
    )
