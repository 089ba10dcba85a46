"""The ingest pipeline: read exports → clean → (skip forgotten/known) → dedup → PII scrub → language → store.

`roost ingest PATH... [--format F] [--strict]`. Per-post work (normalise, scrub, language, MinHash) runs in
worker processes over batches; dedup decisions and writes stay in this process, in input order, so a run is
deterministic and a re-run after a kill reaches the same store as an uninterrupted run.
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing as mp
import os
import signal
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from roost.config import CorpusConfig
from roost.corpus.backend import Location, PostStore, open_store
from roost.corpus.clean import check_keys, choose_lang, clean_post, scrub
from roost.corpus.dedup import signature, text_key
from roost.corpus.importers import ImportOptions, find_exports, read_export
from roost.corpus.post import BadRecord, Post, RecordError, iso, reposted_authors
from roost.errors import RoostError, StrictModeError

MAX_EXAMPLES = 20


@dataclass
class Report:
    read: int = 0  # records seen (good and bad)
    stored: int = 0  # new posts written
    kept: int = 0  # new posts that are training text (not a copy, not a repost)
    duplicates: int = 0
    near_duplicates: int = 0
    reposts: int = 0
    already: int = 0  # in the store before (idempotent re-ingest)
    forgotten: int = 0  # tombstoned ids/authors, not resurrected
    hidden: int = 0  # visibility not kept (followers-only, direct)
    rejected: int = 0
    pii: Counter[str] = field(default_factory=Counter)
    by_lang: Counter[str] = field(default_factory=Counter)
    by_source: Counter[str] = field(default_factory=Counter)
    rejected_reasons: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)  # the first bad records, in full
    skipped: list[str] = field(default_factory=list)  # files in searched folders not read, each with why

    def bad(self, rec: BadRecord) -> None:
        self.read += 1
        self.rejected += 1
        self.rejected_reasons[f"{rec.field or 'record'}: {rec.message.split(' (')[0][:60]}"] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(str(rec))

    def to_json(self) -> dict[str, Any]:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = dict(v) if isinstance(v, Counter) else list(v) if isinstance(v, list) else v
        return out


@dataclass(slots=True)
class Prepared:
    """A post after the per-post work, ready for dedup and the store."""

    post: Post
    scrubbed: str
    pii: dict[str, int]
    key: bytes | None
    sig: bytes | None


def prepare(posts: list[Post], cfg: CorpusConfig, label: str = "") -> list[Prepared | BadRecord]:
    """Per-post work, safe to run in a worker process."""
    out: list[Prepared | BadRecord] = []
    for post in posts:
        try:
            clean_post(post, cfg.max_post_chars)
        except RecordError as e:
            out.append(BadRecord(post.source, f"id {post.id}", e.field, e.message))
            continue
        scrubbed, hits = scrub(post.text, mentions=cfg.scrub_mentions)
        post.lang = choose_lang(post.lang, post.text, cfg.min_lang_chars)
        if post.repost_of is not None:
            out.append(Prepared(post, scrubbed, dict(hits), None, None))
            continue
        sig = signature(post.text, cfg.shingle_size, cfg.num_perm)
        out.append(Prepared(post, scrubbed, dict(hits), text_key(post.text), None if sig is None else sig.tobytes()))
    return out


def _worker_init() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:  # die with the parent (an ingest killed with SIGKILL must not leave workers behind)
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


class Ingester:
    def __init__(self, store: PostStore, cfg: CorpusConfig, run_id: int):
        self.store, self.cfg, self.run_id = store, cfg, run_id
        self.report = Report()
        self.copies = store.copy_decider(cfg.near_dup_threshold, cfg.num_perm, run_id)
        self.seen: set[str] = set()

    def follow(self) -> None:
        """Take in the originals other writers stored since the last batch (see `MemoryCopies.follow`)."""
        self.copies.follow()

    def admit(self, batch: list[Post]) -> list[Post]:
        """Drop what must not or need not be processed: hidden, forgotten, already stored, repeated in input."""
        self.follow()
        known = self.store.existing([p.id for p in batch])
        forgotten = self.forgotten(batch)
        out = []
        for p in batch:
            self.report.read += 1
            if p.visibility not in self.cfg.keep_visibility:
                self.report.hidden += 1
            elif p.id in forgotten:
                self.report.forgotten += 1
            elif p.id in known or p.id in self.seen:
                self.report.already += 1
            else:
                self.seen.add(p.id)
                out.append(p)
        return out

    def forgotten(self, posts: list[Post]) -> set[str]:
        """Ids of those posts that are tombstoned, by a tombstoned author, or reposts of either (one query)."""
        if not posts:
            return set()
        by = {p.id: reposted_authors(p.repost_of, p.text) for p in posts}
        ids = [p.id for p in posts] + [p.repost_of for p in posts if p.repost_of]
        authors = [p.author for p in posts] + [a for names in by.values() for a in names]
        dead_ids, dead_authors = self.store.dead(ids, authors)
        return {
            p.id
            for p in posts
            if p.id in dead_ids
            or p.author in dead_authors
            or p.repost_of in dead_ids
            or any(a in dead_authors for a in by[p.id])
        }

    def commit(self, prepared: list[Prepared | BadRecord]) -> None:
        """Decide copies and store one prepared batch, under the store's write lock after taking in what other
        writers stored meanwhile (so a copy racing its original in another process is still a copy)."""
        with self.store.write_lock():
            gone = self.forgotten([x.post for x in prepared if isinstance(x, Prepared)])
            if gone:  # forgotten (by another process) since this batch was admitted
                prepared = [x for x in prepared if not (isinstance(x, Prepared) and x.post.id in gone)]
                self.report.forgotten += len(gone)
            items = [x for x in prepared if isinstance(x, Prepared) and x.post.repost_of is None]
            self.copies.prepare([x.key for x in items if x.key], [x.sig for x in items if x.sig is not None])
            self._commit(prepared)

    def _commit(self, prepared: list[Prepared | BadRecord]) -> None:
        rows, sigs = [], []
        r, copies = self.report, self.copies
        for item in prepared:
            if isinstance(item, BadRecord):
                r.read -= 1  # counted once in admit(), once more by bad()
                r.bad(item)
                if self.cfg.strict:
                    raise StrictModeError(f"--strict: {item}")
                continue
            p = item.post
            dup_of = near_of = None
            if p.repost_of is not None:
                r.reposts += 1
            elif (orig := copies.exact(item.key)) is not None:  # type: ignore[arg-type]
                dup_of = orig
                r.duplicates += 1
            else:
                sig = None if item.sig is None else np.frombuffer(item.sig, dtype=np.uint32)
                near_of = None if sig is None else copies.near(sig)
                copies.add(item.key, p.id, sig if near_of is None else None)  # type: ignore[arg-type]
                if item.sig is not None and near_of is None:
                    sigs.append((p.id, item.sig))
                if near_of is not None:
                    r.near_duplicates += 1
                else:
                    r.kept += 1
            hits = sum(item.pii.values())
            r.pii.update(item.pii)
            r.by_lang[p.lang or "und"] += 1
            r.by_source[p.source] += 1
            rows.append(
                (
                    p.id,
                    p.author,
                    iso(p.created_at),
                    p.text,
                    item.scrubbed,
                    p.lang or "und",
                    p.reply_to,
                    p.quote_of,
                    p.repost_of,
                    json.dumps(p.hashtags, ensure_ascii=False),
                    json.dumps(p.mentions, ensure_ascii=False),
                    json.dumps(p.urls, ensure_ascii=False),
                    p.visibility,
                    p.source,
                    item.key,
                    dup_of,
                    near_of,
                    hits,
                    self.run_id,
                )
            )
        if rows:
            r.stored += self.store.write_batch(rows, sigs)


class LiveIngest:
    """Posts that arrive a few at a time (`POST /v1/posts` on a running `roost serve`): the same pipeline as
    `roost ingest` (clean, skip forgotten/known, dedup, PII, language, store) with one store connection and the
    dedup state kept for the server's life. Tombstones are re-read for every batch, so a `roost forget` run from
    another process is honoured at once. Exact and near duplicates are found among the posts known at start-up
    and those sent here since (a copy ingested meanwhile by another process is stored as an original)."""

    def __init__(self, db_path: Location, cfg: CorpusConfig):
        import dataclasses
        import threading

        self.store = open_store(db_path, threads=True)
        self.cfg = cfg = dataclasses.replace(cfg, strict=False)  # good posts of a request are kept
        self.lock = threading.Lock()
        self.ing = Ingester(self.store, cfg, self.store.start_run(["api"]))
        self.tomb_seen = self.store.erasure_cursor()
        from datetime import UTC, datetime

        # load the language model and scrubbers now, not on the first request
        prepare([Post("warm:0", "warm", datetime.now(UTC), "warm-up text for the language identifier", "warm")], cfg)

    def add(self, posts: list[Post], label: str = "request") -> tuple[Report, list[BadRecord]]:
        """Ingest these posts; returns the batch's report and the posts rejected (with field and reason)."""
        with self.lock:
            self._follow_erasures()
            ing = self.ing
            ing.report, ing.seen = Report(), set()
            prepared = prepare(ing.admit(posts), self.cfg)
            bad = [BadRecord(label, x.record, x.field, x.message) for x in prepared if isinstance(x, BadRecord)]
            ing.commit(prepared)
            return ing.report, bad

    def _follow_erasures(self) -> None:
        """After any erasure (this server's or another process's), rebuild the dedup state from the store: it
        must not hold a forgotten post's hash or signature (a copy would be reported as "duplicate of <forgotten
        id>") and copies whose original was erased now have a new original among themselves."""
        cursor = self.store.erasure_cursor()
        if cursor != self.tomb_seen:
            self.ing = Ingester(self.store, self.cfg, self.ing.run_id)
            self.tomb_seen = cursor

    def forgotten(self) -> None:
        """Drop erased posts from the dedup state now (called by the erasure cascade of this server)."""
        with self.lock:
            self._follow_erasures()

    def close(self) -> None:
        with self.lock:
            self.store.finish_run(self.ing.run_id, "done", {})
            self.store.close()


def guarded(records: Iterable[Post | BadRecord], label: str) -> Iterator[Post | BadRecord]:
    """Records of one export, never an exception: a record whose id/author is not valid Unicode becomes a
    BadRecord, and an importer that fails mid-file ends that file with a BadRecord naming where and why (what it
    yielded before is kept, and later exports are read)."""
    it = iter(records)
    n = 0
    while True:
        try:
            rec = next(it)
        except StopIteration:
            return
        except (KeyboardInterrupt, RoostError):  # the whole file is not of its format: a clear error, exit 2
            raise
        except Exception as e:  # noqa: BLE001 — one file's failure must not lose the others
            yield BadRecord(label, f"after record {n}", None, f"cannot read further: {type(e).__name__}: {e}")
            return
        n += 1
        if isinstance(rec, Post):
            try:
                check_keys(rec)
            except RecordError as e:
                rid = rec.id.encode("utf-8", "backslashreplace").decode() if isinstance(rec.id, str) else "?"
                rec = BadRecord(label, f"#{n} (id {rid})", e.field, e.message)
        yield rec


def _batches(records: Iterable[Post | BadRecord], size: int, report: Report, strict: bool) -> Iterator[list[Post]]:
    batch: list[Post] = []
    for rec in records:
        if isinstance(rec, BadRecord):
            report.bad(rec)
            if strict:
                raise StrictModeError(f"--strict: {rec}")
            continue
        batch.append(rec)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _run(
    pool: Any, workers: int, cfg: CorpusConfig, ing: Ingester, batches: Iterator[list[Post]]
) -> Iterator[list[Prepared | BadRecord]]:
    """Admit batches here (reading the store), prepare them in the pool, yield results in input order."""
    if pool is None:
        for batch in batches:
            yield prepare(ing.admit(batch), cfg)
        return
    pending: deque[Any] = deque()
    for batch in batches:
        pending.append(pool.apply_async(prepare, (ing.admit(batch), cfg)))
        if len(pending) > 2 * workers:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def validate(exports: list[tuple[Path, str]], cfg: CorpusConfig, opts: ImportOptions) -> None:
    """`--strict`: read everything first and stop at the first bad record, before anything is written."""
    for path, fmt in exports:
        for rec in read_export(path, fmt, opts):
            if isinstance(rec, BadRecord):
                raise StrictModeError(f"--strict: {rec} (nothing was written)")
            try:
                clean_post(rec, cfg.max_post_chars)
            except RecordError as e:
                raise StrictModeError(
                    f"--strict: {BadRecord(str(path), f'id {rec.id}', e.field, e.message)} (nothing was written)"
                ) from None


def ingest(
    paths: list[Path],
    db_path: Location,
    cfg: CorpusConfig,
    opts: ImportOptions | None = None,
    show_progress: bool = True,
    on_wait: Callable[[str], None] | None = None,
) -> Report:
    opts = opts or ImportOptions()
    opts.include_deleted = opts.include_deleted or cfg.include_deleted
    exports, skipped = find_exports(paths, opts.format)
    if cfg.strict:
        if skipped:
            raise StrictModeError(f"--strict: skipped {skipped[0]} (nothing was written)")
        validate(exports, cfg, opts)
    with open_store(db_path) as store, store.ingest_lock(on_wait):
        run_id = store.start_run(str(p) for p, _ in exports)
        ing = Ingester(store, cfg, run_id)
        ing.report.skipped = skipped
        workers = cfg.workers or (os.cpu_count() or 1)
        pool = mp.get_context("fork").Pool(workers, initializer=_worker_init) if workers > 1 else None
        status = "failed"
        try:
            with Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[n]:,} posts"),
                TimeElapsedColumn(),
                disable=not show_progress,
                transient=True,
            ) as progress:
                for path, fmt in exports:
                    task = progress.add_task(f"{fmt} {path.name}", total=None, n=0)
                    records = guarded(read_export(path, fmt, opts), str(path))
                    for prepared in _run(
                        pool, workers, cfg, ing, _batches(records, cfg.batch_size, ing.report, cfg.strict)
                    ):
                        ing.commit(prepared)
                        progress.update(task, n=ing.report.read)
            status = "done"
        finally:
            if pool is not None:
                pool.terminate()
            store.finish_run(run_id, status, ing.report.to_json())
    return ing.report
