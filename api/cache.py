"""Answers computed from the catalog, kept until the workspace changes.

Stats and concept neighbourhoods cost 0.2-0.4 s of DuckDB work on a busy 2-core box, and the
answer only changes when a table gains, loses or rewrites a shard. Every write in a workspace is
a rename into the table's folder (engine/workspace.py), which updates that folder's mtime, so the
mtimes of the table folders and of the catalog file together stamp a version of the data.
(A folder's mtime moves in clock ticks of a few ms: a write landing in the same tick as the one
before, with a read in between, shows up at the next change. Writes come shard by shard, seconds
apart, so this is a theoretical staleness, not a practical one.)
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from engine import schema
from engine.embedding_models import MODELS_FILE
from engine.workspace import Workspace


def workspace_stamp(ws: Workspace) -> tuple:
    """mtime_ns of every table folder (the active model's for ``embeddings``), of the catalog and of
    the record of embedding models (0 for one that does not exist)."""
    stamp = []
    for rel in (*(ws.table_rel(name) for name in schema.TABLES), ws.catalog_file, MODELS_FILE):
        try:
            stamp.append(os.stat(ws.path(rel)).st_mtime_ns)
        except FileNotFoundError:
            stamp.append(0)
    return tuple(stamp)


class StampedCache:
    """A small LRU of answers, all dropped when the workspace stamp changes."""

    def __init__(self, ws: Workspace, max_entries: int = 1024):
        self.ws, self.max_entries = ws, max_entries
        self._stamp: tuple | None = None
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The cached answer for ``key``, computed (outside the lock) when missing or stale."""
        stamp = workspace_stamp(self.ws)
        with self._lock:
            if stamp != self._stamp:
                self._stamp, self._entries = stamp, OrderedDict()
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        value = compute()  # two requests may both compute a missing key: same answer, no harm
        with self._lock:
            if stamp == self._stamp:
                self._entries[key] = value
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
        return value
