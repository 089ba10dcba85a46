"""Importers: every export format roost reads, detected from the file, each yielding Post or BadRecord.

`roost ingest PATH... [--format FMT]`. Formats: x-archive, twitter-api, mastodon, bluesky, jsonl, csv, parquet.
A folder that is not itself an export is searched for exports (so `roost ingest exports/` works); in it, what
cannot be read (a FIFO, socket or device, a symbolic link, a file of no known format) is skipped with a line naming
it and why, and the other exports are read (`find_exports`, `importers/paths.py`).
Every importer reads within the budgets of `ImportOptions.limits` (see `importers/limits.py`): a record or archive
member over a budget is rejected with a message naming file, member and record, and the rest is kept.
"""

from __future__ import annotations

import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from roost.corpus.importers.bluesky import read_bluesky
from roost.corpus.importers.generic import parse_mapping, read_generic
from roost.corpus.importers.limits import Limits
from roost.corpus.importers.mastodon import read_mastodon
from roost.corpus.importers.paths import refusal
from roost.corpus.importers.twitter_api import read_twitter_api
from roost.corpus.importers.x_archive import is_x_archive, read_tweets_file, read_x_archive
from roost.corpus.post import BadRecord, Post
from roost.errors import FormatError

FORMATS = ("x-archive", "twitter-api", "mastodon", "bluesky", "jsonl", "csv", "parquet")


@dataclass
class ImportOptions:
    format: str | None = None  # force a format
    mapping: dict[str, str] = field(default_factory=lambda: parse_mapping(None))
    source: str = "generic"  # id prefix for generic files
    include_deleted: bool = False
    limits: Limits = field(default_factory=Limits)  # size, ratio, depth and tree budgets (importers/limits.py)


def _peek(path: Path, n: int = 1 << 14) -> bytes:
    with open(path, "rb") as fp:
        return fp.read(n)


def detect_format(path: Path) -> str | None:
    """The format of one export (None: a folder to search, or nothing roost reads)."""
    if path.is_dir():
        if is_x_archive(path):
            return "x-archive"
        if (path / "outbox.json").is_file():
            return "mastodon"
        return None
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix.lower() == ".gz" else path.suffix.lower()
    if suffix == ".zip" or zipfile.is_zipfile(path):
        if is_x_archive(path):
            return "x-archive"
        raise FormatError(f"{path}: a zip without data/tweets.js (not an X archive)")
    if suffix in (".tar.gz", ".tgz", ".tar"):
        try:
            is_tar = tarfile.is_tarfile(path)
        except (OSError, EOFError, tarfile.TarError):
            is_tar = False
        if is_tar:
            return "mastodon"
        raise FormatError(f"{path}: not a readable tar archive")
    head = _peek(path)
    if not head.strip():
        raise FormatError(f"{path}: empty file")
    if suffix == ".car" or head[1:2] == b"\xa2" and b"roots" in head[:64]:
        return "bluesky"
    if suffix == ".parquet" or head[:4] == b"PAR1":
        return "parquet"
    if suffix in (".csv", ".tsv"):
        return "csv"
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    if text.startswith("window.YTD"):
        return "x-archive"
    if '"orderedItems"' in text or '"OrderedCollection"' in text:
        return "mastodon"
    if text.startswith(("{", "[")):
        first_obj = text[:4000]
        if (
            ('"data"' in first_obj and ('"author_id"' in first_obj or '"includes"' in first_obj))
            or ('"id_str"' in first_obj and ('"full_text"' in first_obj or '"text"' in first_obj))
            or '"statuses"' in first_obj
        ):
            return "twitter-api"
        return "jsonl"
    raise FormatError(
        f"{path}: cannot tell the format (starts with {text[:24]!r}); use --format, one of " + ", ".join(FORMATS)
    )


def find_exports(paths: list[Path], forced: str | None) -> tuple[list[tuple[Path, str]], list[str]]:
    """Resolve command-line paths to (export, format), searching folders that are not an export themselves; and
    what was skipped in those folders, one line each naming the path and why (see `roost.corpus.importers.paths`).
    A path named here that is missing, special or unrecognised is a FormatError; so is a folder with no export."""
    out: list[tuple[Path, str]] = []
    skipped: list[str] = []
    for path in paths:
        if not path.exists():
            raise FormatError(f"{path}: no such file or folder")
        why = refusal(path, follow=True)
        if why is not None:
            raise FormatError(f"{path}: {why}")
        if forced:
            if forced not in FORMATS:
                raise FormatError(f"--format {forced}: unknown; one of {', '.join(FORMATS)}")
            out.append((path, forced))
            continue
        fmt = detect_format(path)
        if fmt is not None:
            out.append((path, fmt))
            continue
        found = _search(path, skipped)
        if not found:
            raise FormatError(f"{path}: no export found in this folder" + "".join(f"\n  skipped {s}" for s in skipped))
        out.extend(found)
    return out, skipped


MAX_FOLDER_DEPTH = 32  # sub-folder levels searched for exports below a folder named on the command line


def _search(folder: Path, skipped: list[str], depth: int = 0) -> list[tuple[Path, str]]:
    """The exports in a folder (and its sub-folders, at most MAX_FOLDER_DEPTH deep), skipping, with a line in
    `skipped`, what cannot be read."""
    found: list[tuple[Path, str]] = []
    if depth > MAX_FOLDER_DEPTH:
        skipped.append(f"{folder}: more than {MAX_FOLDER_DEPTH} folders deep; not searched")
        return found
    try:
        children = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as e:
        skipped.append(f"{folder}: cannot be listed ({e.strerror or type(e).__name__})")
        return found
    for child in children:
        fmt, why = None, refusal(child)
        if why is None:
            try:
                fmt = detect_format(child)
            except FormatError as e:
                why = str(e).removeprefix(f"{child}: ")
            except OSError as e:
                why = f"cannot be read ({e.strerror or type(e).__name__})"
        if why is not None:
            skipped.append(f"{child}: {why}")
        elif fmt is not None:
            found.append((child, fmt))
        else:
            inner = _search(child, skipped, depth + 1)
            if not inner:
                skipped.append(f"{child}: no export found in this folder")
            found.extend(inner)
    return found


def read_export(path: Path, fmt: str, opts: ImportOptions) -> Iterator[Post | BadRecord]:
    """The records of one export, within `opts.limits` (a flood of bad records ends it: see `capped`)."""
    return capped(_read_export(path, fmt, opts), path, opts.limits)


def capped(records: Iterator[Post | BadRecord], path: Path, limits: Limits) -> Iterator[Post | BadRecord]:
    """`records`, until more than `max_bad_records` of them are bad and the bad outnumber the good: then one
    BadRecord saying so, and the rest of the file is not read (the importer is closed where it stands)."""
    good = bad = 0
    try:
        for rec in records:
            if isinstance(rec, BadRecord):
                bad += 1
                if bad > limits.max_bad_records and bad > good:
                    yield BadRecord(
                        str(path),
                        f"after record {good + bad - 1}",
                        None,
                        f"more than {limits.max_bad_records:,} bad records (and fewer good ones): "
                        f"the rest of {path} is skipped",
                    )
                    return
            else:
                good += 1
            yield rec
    finally:
        close = getattr(records, "close", None)
        if close is not None:
            close()


def _read_export(path: Path, fmt: str, opts: ImportOptions) -> Iterator[Post | BadRecord]:
    lim = opts.limits
    if fmt == "x-archive":
        if path.is_file() and not zipfile.is_zipfile(path):  # a bare tweets.js
            return read_tweets_file(path, lim)
        return read_x_archive(path, opts.include_deleted, lim)
    if fmt == "twitter-api":
        return read_twitter_api(path, jsonl=path.suffix.lower() in (".jsonl", ".ndjson"), limits=lim)
    if fmt == "mastodon":
        return read_mastodon(path, lim)
    if fmt == "bluesky":
        return read_bluesky(path, lim)
    if fmt in ("jsonl", "csv", "parquet"):
        return read_generic(path, fmt, opts.mapping, opts.source, lim)
    raise FormatError(f"--format {fmt}: unknown; one of {', '.join(FORMATS)}")
