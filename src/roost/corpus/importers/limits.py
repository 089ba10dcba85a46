"""Budgets every importer enforces on hostile input: size per record and per archive member, compression ratio
(per member and per archive), nesting depth, bad records per file, repository size, CBOR items per block and tree
walk. A violation rejects that record or member (a `BadRecord` naming file, member and record) and the rest is
kept; nothing is read past a budget.

The defaults are the named constants below; `ImportOptions(limits=Limits(...))` overrides them per ingest.
"""

from __future__ import annotations

import io
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

MIB = 1 << 20
# One record (a JSON element, a JSONL/CSV line, a CBOR block) larger than this is refused after reading this much
# of it; the rest of it is skipped without being kept. For JSON arrays it counts decoded characters (>= 1 byte each).
# 16 MiB is ~1000x a real tweet/toot/post record and leaves room for a 10 MB text the cleaner names by field.
MAX_RECORD_BYTES = 16 * MIB
# Containers (arrays/objects/maps) nested deeper than this reject their record. Real exports nest 6-8 deep.
MAX_DEPTH = 64
# An archive member (zip entry, tar entry) that decompresses to more than this is refused at this point.
MAX_MEMBER_BYTES = 4 << 30
# ... or that expands more than MAX_RATIO times its compressed size once past RATIO_FLOOR_BYTES (a decompression
# bomb: JSON exports compress 5-20x, deflate bombs ~1000x). Small members are never held to the ratio.
MAX_RATIO = 100
RATIO_FLOOR_BYTES = 64 * MIB
# The decompressed bytes of all the members read from one archive (an X archive's account, notes and tweets
# files), counted from their headers as each is opened: the member that would pass it is refused, and those after
# it. Real archives hold well under 2 GiB of these files (the media are not read). Together they are also held
# to MAX_RATIO past RATIO_FLOOR_BYTES (their declared sizes summed), so that many small members, each under the
# per-member floor, cannot add up to a bomb.
MAX_ARCHIVE_BYTES = 8 << 30
# A file that yields more than this many bad records, and more bad records than good ones, is refused from there
# on with one message (the records before are kept): each bad record costs a report line and ~4 us, so a small
# zip of 2-byte non-records (`[0,0,…]`, 1000:1) would otherwise be millions of them and minutes of ingest.
MAX_BAD_RECORDS = 10_000
# A Bluesky repository is read into memory (its tree needs every block): larger files are refused before reading.
MAX_REPO_BYTES = 1 << 30
# CBOR data items (each array element, map key and value, string, number, tag) in one Bluesky block. Decoding
# makes a Python object of each, up to ~90 bytes for a 1-byte item (an empty array or map), so it is the items,
# not the bytes, that bound a decoded block: 100,000 is ~100x a real post, commit or tree node, and keeps one
# decoded block under ~10 MB plus its strings. A block of at most this many bytes cannot exceed it and is decoded
# directly; a larger one has its item heads counted first (a scan that stops at the budget), and is refused
# undecoded past it. Blocks are decoded one at a time and dropped (posts and tree nodes are decoded again when
# needed), so a repository costs its file size plus an index, whatever its blocks hold.
MAX_BLOCK_ITEMS = 100_000
# Merkle search tree nodes visited in one repository (each at most once: a tree that loops is cut and reported).
MAX_TREE_NODES = 4_000_000
# Members of a tar archive looked at while searching for outbox.json.
MAX_MEMBERS = 100_000
# Long-post bodies (X note-tweet.js) held in memory to join to their tweets.
MAX_NOTES = 500_000
# A Parquet row group whose declared uncompressed size exceeds this is refused before it is read.
MAX_ROW_GROUP_BYTES = 512 * MIB

# What damaged archives raise while being read (CRC, truncated deflate/gzip, bad headers, unsupported methods).
ARCHIVE_ERRORS = (
    OSError,
    EOFError,
    ValueError,
    RuntimeError,
    NotImplementedError,
    zipfile.BadZipFile,
    tarfile.TarError,
    zlib.error,
    struct.error,
)


@dataclass(frozen=True)
class Limits:
    """The budgets of one ingest (see the constants above for what each one bounds and why)."""

    max_record_bytes: int = MAX_RECORD_BYTES
    max_depth: int = MAX_DEPTH
    max_member_bytes: int = MAX_MEMBER_BYTES
    max_ratio: float = MAX_RATIO
    ratio_floor_bytes: int = RATIO_FLOOR_BYTES
    max_archive_bytes: int = MAX_ARCHIVE_BYTES
    max_bad_records: int = MAX_BAD_RECORDS
    max_repo_bytes: int = MAX_REPO_BYTES
    max_block_items: int = MAX_BLOCK_ITEMS
    max_tree_nodes: int = MAX_TREE_NODES
    max_members: int = MAX_MEMBERS
    max_notes: int = MAX_NOTES
    max_row_group_bytes: int = MAX_ROW_GROUP_BYTES


DEFAULT = Limits()


def size(n: float) -> str:
    """A byte count for messages: `16 MiB`, `200.0 MB`, `512 bytes`."""
    if n >= MIB and n % MIB == 0:
        return f"{int(n) // MIB} MiB"
    if n >= 1e6:
        return f"{n / 1e6:,.1f} MB"
    if n >= 1e3:
        return f"{n / 1e3:,.1f} kB"
    return f"{int(n)} bytes"


class StreamError(Exception):
    """A stream cannot be read further: a budget was reached or the archive is damaged. The reader of the stream
    turns it into one BadRecord and keeps what it read before."""


def member_verdict(uncompressed: int, compressed: int, limits: Limits) -> str | None:
    """Why an archive member whose header declares these sizes must not be read (None: it may be read).
    `compressed` may be an upper bound (a whole .tar.gz for one of its members)."""
    if uncompressed > limits.max_member_bytes:
        return (
            f"declares {size(uncompressed)} uncompressed, over the {size(limits.max_member_bytes)} "
            "budget per archive member; not read"
        )
    if uncompressed > limits.ratio_floor_bytes and uncompressed > limits.max_ratio * max(compressed, 1):
        return (
            f"expands from {size(compressed)} to {size(uncompressed)} "
            f"(over the {limits.max_ratio:g}:1 budget: a decompression bomb?); not read"
        )
    return None


def archive_verdict(uncompressed: int, compressed: int, limits: Limits) -> str | None:
    """Why the next member of an archive must not be read, given the declared sizes of the members read so far
    plus this one (None: it may be read): the budget per archive, and the compression ratio of them together."""
    if uncompressed > limits.max_archive_bytes:
        return (
            f"the members read from this archive would decompress to {size(uncompressed)} together, over the "
            f"{size(limits.max_archive_bytes)} budget per archive; not read"
        )
    if uncompressed > limits.ratio_floor_bytes and uncompressed > limits.max_ratio * max(compressed, 1):
        return (
            f"the members read from this archive would expand from {size(compressed)} to {size(uncompressed)} "
            f"together (over the {limits.max_ratio:g}:1 budget: a decompression bomb?); not read"
        )
    return None


class LimitedReader(io.RawIOBase):
    """A decompressing stream (zip or tar member) that counts what it yields and stops at the member budgets:
    StreamError once it has produced more than `max_member_bytes`, or more than `max_ratio` times the compressed
    bytes consumed (`compressed()`) once past `ratio_floor_bytes`. Read errors of a damaged archive become
    StreamError too. Wrap in io.BufferedReader for readline()."""

    def __init__(self, raw: IO[bytes], limits: Limits, compressed: Callable[[], int] | None = None):
        super().__init__()
        self.raw, self.limits, self.compressed = raw, limits, compressed
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        try:
            data = self.raw.read(len(view))
        except ARCHIVE_ERRORS as e:
            raise StreamError(f"damaged archive member ({type(e).__name__}: {str(e)[:120]})") from None
        n = len(data)
        view[:n] = data
        self.count += n
        self._check()
        return n

    def close(self) -> None:
        if not self.closed:
            try:
                self.raw.close()
            except ARCHIVE_ERRORS:
                pass
        super().close()

    def _check(self) -> None:
        lim = self.limits
        if self.count > lim.max_member_bytes:
            raise StreamError(
                f"archive member decompresses to more than {size(lim.max_member_bytes)} (budget per member); "
                "the rest of it is not read"
            )
        if self.compressed is not None and self.count > lim.ratio_floor_bytes:
            packed = max(self.compressed(), 1)
            if self.count > lim.max_ratio * packed:
                raise StreamError(
                    f"archive member expands more than the {lim.max_ratio:g}:1 budget ({size(self.count)} from "
                    f"{size(packed)}: a decompression bomb?); the rest of it is not read"
                )


def deep_message(limit: int) -> str:
    """The one wording for a record over the depth budget."""
    return f"record nested too deeply (over {limit} levels, the depth budget)"


def too_deep(value: Any, limit: int) -> bool:
    """Whether a decoded value nests containers (list/dict) deeper than `limit` (iterative, stops early)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            children: Any = v.values()
        elif isinstance(v, list):
            children = v
        else:
            continue
        if d > limit:
            return True
        stack.extend((c, d + 1) for c in children if isinstance(c, (dict, list)))
    return False
