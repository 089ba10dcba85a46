"""Real-time search for `roost serve`: a thread that keeps the indexes up with the store.

Every `search.refresh_ms` (or at once when `POST /v1/posts` wakes it) it indexes the posts the store gained —
from the API, or from a `roost ingest` run in another process — and drops the posts tombstoned since, whoever
forgot them; each round ends with a tantivy commit and an explicit reader reload, so a post is searchable when
the round that picked it up returns. Vectors are saved every `save_every_s` and on stop; after a crash the next
start catches up from the last save (keyword documents are upserted by id, vectors replaced by rowid).
"""

from __future__ import annotations

import logging
import threading
import time

from roost.search.backend import SearchBackend

log = logging.getLogger(__name__)


class LiveIndexer:
    def __init__(self, index: SearchBackend, save_every_s: float = 300.0):
        self.index = index
        self.period = index.cfg.refresh_ms / 1000
        self.save_every_s = save_every_s
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.rounds = 0  # completed catch-up rounds (a waiter knows its post is in once this passes its round)
        self.done = threading.Condition()
        self.error: str | None = None
        self.busy = False
        self.thread = threading.Thread(target=self._loop, name="roost-indexer", daemon=True)

    def start(self) -> LiveIndexer:
        self.thread.start()
        return self

    def _loop(self) -> None:
        last_save = time.monotonic()
        while not self.stopping.is_set():
            self.wake.wait(self.period)
            self.wake.clear()
            with self.done:
                self.busy = True
            try:
                self.index.catch_up()
                self.error = None
            except Exception as e:  # noqa: BLE001 — keep serving searches; report on /health
                self.error = f"{type(e).__name__}: {e}"
                log.warning("search indexer: %s", self.error)
            with self.done:
                self.rounds += 1
                self.busy = False
                self.done.notify_all()
            if time.monotonic() - last_save > self.save_every_s:
                self.index.save()
                last_save = time.monotonic()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wake the indexer and wait until a round that started after this call has finished."""
        with self.done:
            # a round running now may have read the store before our post landed: wait for the next one too
            target = self.rounds + (2 if self.busy else 1)
        self.wake.set()
        deadline = time.monotonic() + timeout
        with self.done:
            while self.rounds < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.done.wait(left)
                self.wake.set()
        return True

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        self.thread.join(timeout=30)
        self.index.save()
        self.index.close()
