"""The store's interface, backend-neutral: what every stage may call on the post store, and the one place that
opens it. SQLite (`corpus/store.py` writes, `corpus/reader.py` reads) is the embedded default; PostgreSQL
(`corpus/pgstore.py`, `corpus/pgreader.py`) implements the same two protocols, and `open_store`/`open_reader` pick
it when the location is a `postgresql://` URL.

    with open_reader(ws.corpus_db) as r:
        r.count_training(); r.post_text("x:123")
    with open_store(ws.corpus_db) as s:
        with s.write_lock():
            ...  # read others' rows since your cursor, decide copies, s.write_batch(...)

Rules every implementation keeps (tested in tests/corpus and tests/test_erasure.py):
- `seq` is a monotonic cursor: a post's seq is never reused after a delete, so followers read "since seq";
- a tombstoned id or author (matched by `author_key`, NFKC_Casefold) is never stored again, nor a repost of one;
  tombstones keep keyed hashes (roost.corpus.tombkeys), never the name or id;
- every erased row's seq is logged (`erased_since`), so followers drop exactly what an erasure removed;
- `write_lock()` serialises the read-decide-write step of every writer across processes (and machines);
- `forget()` removes the text from the backend's files (`checkpoint()` returns False if it could not yet).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np


class PostReader(Protocol):
    """Read-only access for later stages (tokenizer, shards, SFT, search followers, leak guard, server)."""

    def close(self) -> None: ...
    def __enter__(self) -> PostReader: ...
    def __exit__(self, *exc: object) -> None: ...
    def snapshot(self) -> contextlib.AbstractContextManager[PostReader]: ...
    # followers: rows and erasures since a cursor
    def max_seq(self) -> int: ...
    def erasure_cursor(self) -> int: ...
    def erased_since(self, cursor: int) -> list[tuple[int, int]]: ...
    def count_searchable_since(self, seq: int) -> int: ...
    def searchable_rows(self, after: int = 0, upto: int | None = None, batch: int = 2048) -> Iterator[list[tuple]]: ...
    def posts_by_seq(self, seqs: list[int]) -> dict[int, tuple[str, str, str, str]]: ...
    def existing(self, ids: list[str]) -> set[str]: ...
    def dead(self, ids: list[str], authors: list[str]) -> tuple[set[str], set[str]]: ...
    def texts_since(self, seq: int) -> list[tuple[int, str, str]]: ...
    def post_by_seq(self, seq: int) -> tuple[str, str, str] | None: ...
    # training and lookups
    def count_training(self) -> int: ...
    def training_texts(self, limit: int = 0, batch: int = 1000) -> Iterator[list[str]]: ...
    def training_sample_by_lang(self, n: int) -> list[tuple[str, str]]: ...
    def reply_pairs(self) -> list[tuple[str, str, str]]: ...
    def training_snapshot(
        self, batch: int, meta: dict[str, Any], stop: threading.Event | None = None
    ) -> Iterator[list[tuple[str, str, str]]]: ...
    def post_text(self, post_id: str) -> str | None: ...
    def posts_in(self, lang: str, min_chars: int) -> list[tuple[str, str]]: ...


class PostStore(Protocol):
    """Writes: ingest runs, batches of cleaned posts with their dedup state, erasure, stats."""

    def close(self) -> None: ...
    def __enter__(self) -> PostStore: ...
    def __exit__(self, *exc: object) -> None: ...
    # dedup and tombstone state for a writer
    def dead(self, ids: list[str], authors: list[str]) -> tuple[set[str], set[str]]: ...
    def existing(self, ids: list[str]) -> set[str]: ...
    def original_hashes(self) -> Iterator[tuple[bytes, str]]: ...
    def signatures(self) -> Iterator[tuple[str, np.ndarray]]: ...
    def max_seq(self) -> int: ...
    def dedup_state_since(
        self, seq: int, run_id: int
    ) -> tuple[list[tuple[bytes, str]], list[tuple[str, np.ndarray]]]: ...
    # writing
    def write_lock(self) -> contextlib.AbstractContextManager[None]: ...
    def write_batch(self, rows: list[tuple[Any, ...]], sigs: list[tuple[str, bytes]]) -> int: ...
    def start_run(self, paths: Iterable[str]) -> int: ...
    def reap_runs(self) -> int: ...
    def finish_run(self, run_id: int, status: str, report: dict[str, Any]) -> None: ...
    # erasure
    def forget(self, authors: list[str], post_ids: list[str]) -> dict[str, Any]: ...
    def checkpoint(self, wait_s: float = 10.0) -> bool: ...
    def erase_pending(self) -> list[str]: ...
    def erasure_cursor(self) -> int: ...
    def stats(self) -> dict[str, Any]: ...


# Where a store is: the workspace's SQLite file (`Workspace.corpus_db`), or a `postgresql://` URL (`--store URL`,
# `[store] url` in roost.toml; see `store_location`).
Location = Path | str


def is_server(location: Location) -> bool:
    """True for a PostgreSQL URL (`postgresql://…` or `postgres://…`)."""
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


def store_location(ws_corpus_db: Path, url: str | None) -> Location:
    """The store to use: `url` (from `--store` or `[store] url`) when given, else the workspace's SQLite file."""
    if url:
        if not is_server(url):
            from roost.corpus.pgstore import redact
            from roost.errors import UsageError

            raise UsageError(f"--store {redact(url)!r}: give a postgresql:// URL (the default store is {ws_corpus_db})")
        return url
    return ws_corpus_db


def describe(location: Location) -> str:
    """The store as it may be written into files and messages: a path, or a URL without its password."""
    if is_server(location):
        from roost.corpus.pgstore import redact

        return redact(str(location))
    return str(location)


def store_exists(location: Location) -> bool:
    """Whether there is a store to read: the SQLite file exists, or a server URL is configured (the server
    answers for itself when opened)."""
    return is_server(location) or Path(location).is_file()


def open_store(location: Location, readonly: bool = False, threads: bool = False) -> PostStore:
    """The writable store at `location` (the workspace's `corpus_db`, or a PostgreSQL URL). `threads`: the caller
    serialises use of one connection across its threads (a server)."""
    if is_server(location):
        from roost.corpus.pgstore import PgStore

        return PgStore(str(location), readonly=readonly, threads=threads)
    from roost.corpus.store import Store

    return Store(Path(location), readonly=readonly, threads=threads)


def open_reader(location: Location) -> PostReader:
    """A read-only view of the store at `location`."""
    if is_server(location):
        from roost.corpus.pgreader import PgReader

        return PgReader(str(location))
    from roost.corpus.reader import StoreReader

    return StoreReader(Path(location))
