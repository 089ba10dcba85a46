"""Hostile exports: decompression bombs, an oversized record, a Bluesky tree that loops on itself, and deep nesting in
JSON and CBOR are each rejected with a message naming the file, member and record, in bounded memory and time, while
everything else in the same file and command is kept. Ends with generated damage to four formats (values of the
wrong type, truncation, byte flips, garbage) through the importer API: nothing but a RoostError escapes, and no
importer gives up mid-file on an exception.

The budgets are those of `roost.corpus.importers.limits` (16 MiB per record, 100:1 past 64 MiB per member, depth 64).
"""

from __future__ import annotations

import io
import json
import os
import random
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import time
import tracemalloc
import zipfile
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import libipld
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roost.corpus.importers import ImportOptions, read_export
from roost.corpus.ingest import guarded
from roost.corpus.post import BadRecord, Post
from roost.demo.writers import Draft, mastodon_activity, write_bluesky_car, write_x_archive
from roost.errors import RoostError
from tests.corpus.test_x_archive import ACCOUNT, tweet

MB = 1 << 20
BOMB_MB = 200  # what each bomb expands to
ACTOR = "https://example.social/users/ann"
T0 = datetime(2024, 1, 1, tzinfo=UTC)


# ---------------------------------------------------------------------------------------------------------- helpers


def _roost(home: Path, *args: str) -> tuple[int, str, float]:
    """`roost --home HOME ARGS` as a real process: (exit code, stdout + stderr, peak RSS in MiB of that process)."""
    exe = Path(sys.executable).with_name("roost")
    with tempfile.TemporaryFile("w+") as out:  # a file, not a pipe: wait4 (this child's own rusage) cannot block
        p = subprocess.Popen(
            [str(exe), "--home", str(home), *args], stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "200"},
        )  # fmt: skip
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        return p.returncode, out.read(), usage.ru_maxrss / 1024


@pytest.fixture(scope="module")
def baseline_mb(tmp_path_factory: pytest.TempPathFactory) -> float:
    """Peak RSS of `roost ingest` on a one-post file: the floor the bomb runs are compared with."""
    d = tmp_path_factory.mktemp("baseline")
    f = d / "one.jsonl"
    f.write_text(json.dumps({"id": "1", "author": "a", "created_at": "2024-01-01T00:00:00Z", "text": "hello trams"}))
    code, out, peak = _roost(d / "h", "ingest", str(f))
    assert code == 0, out
    return peak


def _ids(home: Path) -> set[str]:
    return {r[0] for r in sqlite3.connect(home / "corpus.db").execute("SELECT id FROM posts")}


def _flat(text: str) -> str:
    return " ".join(text.split())


class _Pieces(io.RawIOBase):
    """A read-only stream over byte pieces (a bomb is written without ever being held whole)."""

    def __init__(self, pieces: Iterable[bytes]):
        super().__init__()
        self.it, self.cur = iter(pieces), memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        while not self.cur:
            self.cur = memoryview(next(self.it, b""))
            if not self.cur:
                return 0
        n = min(len(b), len(self.cur))
        b[:n], self.cur = self.cur[:n], self.cur[n:]
        return n


def _repeat(mb: int) -> Iterator[bytes]:
    chunk = b"A" * MB
    for _ in range(mb):
        yield chunk


def _ytd_pieces(records: list[bytes | Iterable[bytes]]) -> Iterator[bytes]:
    """`window.YTD.tweets.part0 = [r0, r1, ...]` where a record may be a stream of pieces."""
    yield b"window.YTD.tweets.part0 = [\n"
    for i, rec in enumerate(records):
        if i:
            yield b",\n"
        if isinstance(rec, bytes):
            yield rec
        else:
            yield from rec
    yield b"\n]"


def _big_tweet(id_: str, mb: int) -> Iterator[bytes]:
    """One tweet whose full_text is `mb` MiB of one repeated letter."""
    head = json.dumps(tweet(id_, "X"))
    cut = head.index('"full_text": "X"') + len('"full_text": "')
    yield head[:cut].encode()
    yield from _repeat(mb)
    yield head[cut + 1 :].encode()


def _x_zip(path: Path, records: list[bytes | Iterable[bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("data/account.js", ACCOUNT)
        with zf.open("data/tweets.js", "w") as out:
            for piece in _ytd_pieces(records):
                out.write(piece)
    return path


def _good_export(root: Path) -> tuple[Path, set[str]]:
    drafts = [Draft(str(700 + i), f"a fine post number {i} about trams and bread", T0) for i in range(3)]
    return write_x_archive(root / "good", "bob", "2", drafts), {f"x:{700 + i}" for i in range(3)}


def _read(path: Path, fmt: str, opts: ImportOptions | None = None) -> tuple[list[Post], list[BadRecord]]:
    out = list(guarded(read_export(path, fmt, opts or ImportOptions()), str(path)))
    assert all(isinstance(r, (Post, BadRecord)) for r in out)
    bad = [r for r in out if isinstance(r, BadRecord)]
    assert not any("cannot read further" in b.message or "Recursion" in b.message for b in bad), bad
    return [r for r in out if isinstance(r, Post)], bad


# ------------------------------------------------------------------------------------------ decompression budgets


def test_zip_bomb_member_is_refused_and_the_good_export_kept(tmp_path: Path, baseline_mb: float) -> None:
    """200 MiB of one JSON string in a < 1 MB zip: refused from its header (zipfile never yields more than a member
    declares), memory flat, the other export in the same command kept."""
    good1 = json.dumps(tweet("601", "a good tweet before the bomb")).encode()
    bomb = _x_zip(tmp_path / "bomb.zip", [good1, _big_tweet("602", BOMB_MB)])
    assert bomb.stat().st_size < 2 * MB
    good, ids = _good_export(tmp_path)
    t = time.monotonic()
    code, out, peak = _roost(tmp_path / "h", "ingest", str(bomb), str(good))
    flat = _flat(out)
    assert code == 0 and "Traceback" not in out, out
    assert peak - baseline_mb < 100, f"peak {peak:.0f} MiB vs {baseline_mb:.0f} MiB for one post"
    assert ids <= _ids(tmp_path / "h")
    assert "bomb.zip" in flat and "data/tweets.js" in flat and "decompression bomb" in flat, flat
    assert time.monotonic() - t < 60


def test_mastodon_tar_gz_bomb_stops_at_the_budget(tmp_path: Path, baseline_mb: float) -> None:
    """A tar.gz whose outbox.json expands to 200 MiB from < 1 MB, padded with 3 MB of noise so that the archive as a
    whole passes the header check: read as a stream until the ratio budget, the toots before the bomb kept."""
    items = [mastodon_activity(Draft(str(i), f"toot number {i} about bread", T0), ACTOR) for i in range(3)]
    bomb_item = json.dumps(mastodon_activity(Draft("9", "X", T0), ACTOR)).encode()
    cut = bomb_item.index(b"<p>X") + 3
    pieces = [b'{"type": "OrderedCollection", "orderedItems": [', json.dumps(items[0]).encode(), b", ",
              json.dumps(items[1]).encode(), b", ", bomb_item[:cut], *_repeat(BOMB_MB), bomb_item[cut + 1 :], b", ",
              json.dumps(items[2]).encode(), b"]}"]  # fmt: skip
    path = tmp_path / "bomb.tar.gz"
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo("archive/outbox.json")
        info.size = sum(len(p) for p in pieces)
        tar.addfile(info, io.BufferedReader(_Pieces(pieces)))
        noise = random.Random(7).randbytes(3 * MB)
        info = tarfile.TarInfo("archive/media_attachments/noise.bin")
        info.size = len(noise)
        tar.addfile(info, io.BytesIO(noise))
    assert path.stat().st_size < 5 * MB
    good, ids = _good_export(tmp_path)
    code, out, peak = _roost(tmp_path / "h", "ingest", str(path), str(good))
    flat = _flat(out)
    assert code == 0 and "Traceback" not in out, out
    assert peak - baseline_mb < 100, f"peak {peak:.0f} MiB vs {baseline_mb:.0f} MiB for one post"
    kept = _ids(tmp_path / "h")
    assert ids <= kept and {f"mastodon:{items[i]['object']['id']}" for i in (0, 1)} <= kept
    assert "bomb.tar.gz!archive/outbox.json" in flat and "decompression bomb" in flat, flat


def test_oversized_record_is_refused_unbuffered_and_its_neighbours_kept(tmp_path: Path) -> None:
    """A 48 MiB tweet in a 0.2 MB zip, and a 48 MiB JSONL line: each refused at the 16 MiB record budget without
    being buffered whole; the records on both sides are kept."""
    good = [json.dumps(tweet(str(i), f"neighbour tweet {i}")).encode() for i in (1, 3)]
    archive = _x_zip(tmp_path / "big.zip", [good[0], _big_tweet("2", 48), good[1]])
    lines = tmp_path / "big.jsonl"
    with open(lines, "wb") as f:
        row = {"author": "a", "created_at": "2024-01-01T00:00:00Z"}
        f.write(json.dumps({**row, "id": "1", "text": "first line"}).encode() + b"\n" + b'{"id": "2", "text": "')
        for piece in _repeat(48):
            f.write(piece)
        f.write(b'"}\n' + json.dumps({**row, "id": "3", "text": "third line"}).encode() + b"\n")
    tracemalloc.start()
    try:
        x_posts, x_bad = _read(archive, "x-archive")
        g_posts, g_bad = _read(lines, "jsonl")
        peak = tracemalloc.get_traced_memory()[1] / MB
    finally:
        tracemalloc.stop()
    assert [p.id for p in x_posts] == ["x:1", "x:3"]
    assert [p.id for p in g_posts] == ["generic:1", "generic:3"]
    assert [(b.record, "budget" in b.message) for b in x_bad] == [("#1", True)], x_bad
    assert "big.zip!data/tweets.js" in x_bad[0].file and "16 MiB" in x_bad[0].message
    assert [(b.record, "budget" in b.message) for b in g_bad] == [("line 2", True)], g_bad
    assert peak < 80, f"peak {peak:.0f} MiB of Python allocations for a 48 MiB record"


def _zeros(n: int) -> bytes:
    """`window.YTD.tweet.part0 = [0,0,…]`: n records of 2 bytes that are each rejected (not a tweet object)."""
    return b"window.YTD.tweet.part0 = [" + b"0," * (n - 1) + b"0]"


def _stream(path: Path, stop_after: int) -> tuple[list[Post], list[BadRecord], int]:
    """Read an export through the importer API, keeping only the first bad records (a flood is not held)."""
    good: list[Post] = []
    bad: list[BadRecord] = []
    n_bad = 0
    for rec in guarded(read_export(path, "x-archive", ImportOptions()), str(path)):
        if isinstance(rec, Post):
            good.append(rec)
            continue
        n_bad += 1
        if len(bad) < 50 or "bad records" in rec.message or "decompression bomb" in rec.message:
            bad.append(rec)
        if n_bad > stop_after:
            break
    return good, bad, n_bad


def test_zip_bad_record_flood_is_cut_and_nested_copies_are_not_read(tmp_path: Path) -> None:
    """17 kB of zip: the archive's data/tweets.js holds three good tweets then a million 2-byte non-tweets, and
    seven folders d1/…d7/ hold a copy of data/tweet.js of a million more each (8.4 million rejected records and
    ~30 s when every member matching `…/data/tweet.js` was read in full). Only the archive's own data/ folder is
    read, and past 10,000 bad records (more than the good ones) the rest of the file is refused in one message."""
    good_tweets = b",".join(json.dumps(tweet(str(i), f"good tweet {i}")).encode() for i in range(3))
    junk = _zeros(1 << 20)
    path = tmp_path / "multi.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("data/account.js", ACCOUNT)
        zf.writestr("data/tweets.js", b"window.YTD.tweets.part0 = [" + good_tweets + b"," + junk[26:])
        for d in range(1, 8):
            zf.writestr(f"d{d}/data/tweet.js", junk)
    assert path.stat().st_size < 40_000
    t = time.monotonic()
    good, bad, n_bad = _stream(path, stop_after=50_000)
    took = time.monotonic() - t
    assert [p.id for p in good] == ["x:0", "x:1", "x:2"]
    assert n_bad <= 10_005, f"{n_bad} bad records"
    assert not any("/data/tweet.js" in b.file for b in bad), bad[:3]
    cut = [b for b in bad if "bad records" in b.message]
    assert len(cut) == 1 and cut[0].file == str(path) and "more than 10,000 bad records" in cut[0].message, cut
    assert "the rest of" in cut[0].message and "multi.zip" in cut[0].message and "skipped" in cut[0].message
    assert took < 10, f"{took:.1f} s"


def test_zip_members_are_held_to_a_budget_together(tmp_path: Path) -> None:
    """Forty tweets files of 2 MiB each (one tweet of 2 MiB of one letter: ~500:1, but each member under the
    64 MiB floor of the per-member ratio check): together they pass 64 MiB at ~500:1, so the member that crosses
    the floor and those after it are refused as a decompression bomb, naming the member; the tweets before kept."""
    path = tmp_path / "parts.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("data/account.js", ACCOUNT)
        for i in range(40):
            name = "data/tweets.js" if i == 0 else f"data/tweets-part{i}.js"
            body = json.dumps([tweet(str(1000 + i), "A" * (2 * MB))]).encode()
            zf.writestr(name, b"window.YTD.tweets.part%d = " % i + body)
    assert path.stat().st_size < MB
    t = time.monotonic()
    good, bad, _ = _stream(path, stop_after=1000)
    assert time.monotonic() - t < 15
    assert 20 <= len(good) <= 32, len(good)
    bombs = [b for b in bad if "decompression bomb" in b.message]
    assert bombs and len(bombs) == 40 - len(good), bad
    assert bombs[0].record.startswith("member data/tweets-part") and "together" in bombs[0].message, bombs[0]


def test_x_archive_zipped_under_one_top_level_folder_is_read(tmp_path: Path) -> None:
    """An archive unpacked and zipped again sits under one folder (`twitter-2024/data/…`): still an X archive,
    read whole, with its author from account.js."""
    path = tmp_path / "rezipped.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("twitter-2024/data/account.js", ACCOUNT)
        zf.writestr("twitter-2024/data/tweets.js", "window.YTD.tweets.part0 = " + json.dumps([tweet("1", "one")]))
        zf.writestr("twitter-2024/data/tweets-part1.js", "window.YTD.tweets.part1 = " + json.dumps([tweet("2", "two")]))
        zf.writestr("twitter-2024/Your archive.html", "<html></html>")
    good, bad = _read(path, "x-archive")
    assert [(p.id, p.author) for p in good] == [("x:1", "alice"), ("x:2", "alice")] and not bad, bad
    folder = tmp_path / "unpacked"  # the same, unpacked into a folder and read from the folder above it
    with zipfile.ZipFile(path) as zf:
        zf.extractall(folder)
    good, bad = _read(folder, "x-archive")
    assert [(p.id, p.author) for p in good] == [("x:1", "alice"), ("x:2", "alice")] and not bad, bad


def test_bad_record_cap_spares_a_file_that_is_mostly_good(tmp_path: Path) -> None:
    """12,000 bad lines (no author) among 13,000 good ones: past the 10,000 bad records but never more bad than
    good, so every line is read; the same 12,000 bad lines alone are cut after 10,000."""
    row = {"author": "a", "created_at": "2024-01-01T00:00:00Z"}
    lines = []
    for i in range(25_000):
        good_line = i % 25 < 13
        lines.append(json.dumps({**row, "id": str(i), "text": f"line {i}"} if good_line else {"id": str(i)}))
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("\n".join(lines) + "\n")
    good, bad = _read(mixed, "jsonl")
    assert (len(good), len(bad)) == (13_000, 12_000)
    only_bad = tmp_path / "bad.jsonl"
    only_bad.write_text("\n".join(json.dumps({"id": str(i)}) for i in range(12_000)) + "\n")
    good, bad = _read(only_bad, "jsonl")
    assert not good and len(bad) == 10_001 and "more than 10,000 bad records" in bad[-1].message, bad[-1]


# ------------------------------------------------------------------------------------------------ Bluesky trees


def _car(path: Path, root: bytes, blocks: list[tuple[bytes, bytes]]) -> Path:
    from roost.demo.writers import _varint

    header = libipld.encode_dag_cbor({"version": 1, "roots": [root]})
    body = b"".join(_varint(len(c) + len(d)) + c + d for c, d in blocks)
    path.write_bytes(_varint(len(header)) + header + body)
    return path


def _post_blocks(n: int) -> tuple[list[tuple[bytes, bytes]], list[dict]]:
    from roost.demo.writers import _cid

    blocks, entries = [], []
    for i in range(n):
        rec = {"$type": "app.bsky.feed.post", "text": f"sky post {i}", "createdAt": "2024-01-01T00:00:00.000Z"}
        data = libipld.encode_dag_cbor(rec)
        blocks.append((_cid(data), data))
        key = f"app.bsky.feed.post/3k{i:03d}".encode()
        entries.append({"p": 0, "k": key, "v": _cid(data), "t": None})
    return blocks, entries


@pytest.mark.timeout(15)
def test_bluesky_tree_that_loops_on_itself_is_cut(tmp_path: Path) -> None:
    """Node A's left subtree is B, B's is A, and A's last entry points at A: the walk ends, says where the tree
    loops, and every post is kept under its real record key."""
    from roost.demo.writers import _cid

    posts, entries = _post_blocks(3)
    a_cid, b_cid = _cid(b"node a"), _cid(b"node b")  # a CAR names its blocks: a node can name itself
    entries[-1]["t"] = a_cid
    node_a = libipld.encode_dag_cbor({"l": b_cid, "e": entries})
    node_b = libipld.encode_dag_cbor({"l": a_cid, "e": []})
    commit = libipld.encode_dag_cbor({"did": "did:plc:loop", "version": 3, "data": a_cid, "rev": "3k", "prev": None})
    c_cid = _cid(commit)
    car = _car(tmp_path / "loop.car", c_cid, [(c_cid, commit), (a_cid, node_a), (b_cid, node_b), *posts])
    t = time.monotonic()
    good, bad = _read(car, "bluesky")
    assert time.monotonic() - t < 5
    assert sorted(p.id for p in good) == [f"bluesky:at://did:plc:loop/app.bsky.feed.post/3k{i:03d}" for i in range(3)]
    assert bad and all("loops on itself" in b.message and b.record.startswith("block ") for b in bad), bad


def test_bluesky_deep_cbor_rejects_its_block_alone(tmp_path: Path) -> None:
    """A 50,000-deep CBOR array block and a post record nested 50,000 deep (past libipld's guard) and 100 deep
    (past the depth budget): each rejected by block or record, no RecursionError, the other posts kept. (50,000:
    a block of more than 100,000 items is refused for its item count before it is decoded.)"""
    from roost.demo.writers import _cid

    posts, _ = _post_blocks(4)
    deep_block = b"\x81" * 50_000 + b"\x01"
    rec = libipld.encode_dag_cbor({"$type": "app.bsky.feed.post", "text": "deep", "createdAt": "2024-01-01T00:00:00Z"})
    deep_post = bytes([rec[0] + 1]) + b"\x61x" + b"\x81" * 50_000 + b"\x01" + rec[1:]  # one more key: "x"
    mid_post = bytes([rec[0] + 1]) + b"\x61x" + b"\x81" * 100 + b"\x01" + rec[1:]
    blocks = [posts[0], (_cid(deep_block), deep_block), posts[1], (_cid(deep_post), deep_post), posts[2],
              (_cid(mid_post), mid_post), posts[3]]  # fmt: skip
    car = _car(tmp_path / "deep.car", _cid(b"no commit"), blocks)
    good, bad = _read(car, "bluesky")
    assert sorted(p.text for p in good) == [f"sky post {i}" for i in range(4)]
    deep = [b for b in bad if "nested too deeply" in b.message]
    assert [b.record.split(" (")[0] for b in deep[:2]] == ["block #1", "block #3"], bad
    assert len(deep) == 3 and deep[2].record.startswith("app.bsky.feed.post/cid-"), bad
    assert not any("Recursion" in b.message for b in bad)


def _repo(tmp_path: Path, name: str, extra: list[tuple[bytes, bytes]]) -> tuple[Path, set[str]]:
    """A repository CAR: commit, one tree node over three posts, the posts, then `extra` blocks (not in the tree)."""
    from roost.demo.writers import _cid

    posts, entries = _post_blocks(3)
    node = libipld.encode_dag_cbor({"l": None, "e": entries})
    commit = libipld.encode_dag_cbor(
        {"did": "did:plc:bomb", "version": 3, "data": _cid(node), "rev": "3k", "prev": None}
    )
    blocks = [(_cid(commit), commit), (_cid(node), node), posts[0], *extra, posts[1], posts[2]]
    ids = {f"bluesky:at://did:plc:bomb/app.bsky.feed.post/3k{i:03d}" for i in range(3)}
    return _car(tmp_path / name, _cid(commit), blocks), ids


def test_bluesky_oversized_block_is_refused_whatever_the_decoder(tmp_path: Path) -> None:
    """A well-formed 17 MiB block (one byte string) in an otherwise valid repository: refused by its index and CID
    at the 16 MiB record budget before it is decoded, and the posts around it kept under their real keys. (The
    whole-file decoder used to take it, so the budget held only on the damaged-file path.)"""
    from roost.demo.writers import _cid

    big = libipld.encode_dag_cbor({"blob": b"\x00" * (17 * MB)})
    car, ids = _repo(tmp_path, "big.car", [(_cid(big), big)])
    good, bad = _read(car, "bluesky")
    assert {p.id for p in good} == ids
    assert len(bad) == 1 and bad[0].file == str(car), bad
    assert bad[0].record.startswith("block #3 (") and "16 MiB" in bad[0].message and "budget" in bad[0].message


def test_bluesky_cbor_bomb_block_is_refused_in_bounded_memory(tmp_path: Path, baseline_mb: float) -> None:
    """An 8 MB block that is an array of 8 million empty arrays (~70x its size as Python objects), and 60 blocks
    of 100,000 empty arrays each (6 MB more, each under the item budget): the bomb is refused by block, from a
    count of its CBOR items, before it is decoded; the others are decoded one at a time and dropped. Peak memory
    stays near a one-post ingest (it reached ~1.2 GB when the whole file was decoded at once), the posts kept."""
    from roost.demo.writers import _cid

    n = 8_000_000
    bomb = b"\x9a" + n.to_bytes(4, "big") + b"\x80" * n
    fillers = []
    for i in range(60):
        k = 99_990 - i  # under 100,000 bytes, so under 100,000 items; distinct CIDs
        data = b"\x9a" + k.to_bytes(4, "big") + b"\x80" * k
        fillers.append((_cid(data), data))
    car, ids = _repo(tmp_path, "bomb.car", [(_cid(bomb), bomb), *fillers])
    t = time.monotonic()
    code, out, peak = _roost(tmp_path / "h", "ingest", str(car))
    flat = _flat(out)
    assert code == 0 and "Traceback" not in out, out
    assert time.monotonic() - t < 20
    assert peak - baseline_mb < 100, f"peak {peak:.0f} MiB vs {baseline_mb:.0f} MiB for one post"
    assert ids <= _ids(tmp_path / "h")
    assert "bomb.car: record block #3 (" in flat and "100,000 CBOR items" in flat, flat


# ------------------------------------------------------------------------------------------------- deep JSON


def test_deeply_nested_json_rejects_the_record_and_keeps_its_neighbours(tmp_path: Path) -> None:
    """In an X archive: a bare 100,000-deep array element, a tweet with a 200-deep field and one with a
    100,000-deep object field, between good tweets; the same in JSONL and in a Mastodon outbox."""
    g = [json.dumps(tweet(str(i), f"good tweet {i}")) for i in range(8)]
    arr = "[" * 100_000 + "]" * 100_000
    mid = tweet("3", "mid")
    mid["tweet"]["extra"] = json.loads("[" * 200 + "]" * 200)
    objs = '{"a":' * 100_000 + "1" + "}" * 100_000
    deep_obj = json.dumps(tweet("5", "deep")).replace('"lang"', f'"x": {objs}, "lang"')
    body = f"window.YTD.tweets.part0 = [{g[0]}, {arr}, {g[2]}, {json.dumps(mid)}, {g[4]}, {deep_obj}, {g[6]}]"
    (tmp_path / "a" / "data").mkdir(parents=True)
    (tmp_path / "a" / "data" / "account.js").write_text(ACCOUNT)
    (tmp_path / "a" / "data" / "tweets.js").write_text(body)
    good, bad = _read(tmp_path / "a", "x-archive")
    assert [p.id for p in good] == ["x:0", "x:2", "x:4", "x:6"]
    assert [b.record for b in bad] == ["#1", "#3", "#5"] and all("nested too deeply" in b.message for b in bad), bad

    row = {"author": "a", "created_at": "2024-01-01T00:00:00Z"}
    lines = [json.dumps({**row, "id": "1", "text": "one"}), '{"id": "2", "x": ' + arr + "}",
             json.dumps({**row, "id": "3", "text": "three", "x": json.loads("[" * 100 + "]" * 100)}),
             json.dumps({**row, "id": "4", "text": "four"})]  # fmt: skip
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    good, bad = _read(tmp_path / "d.jsonl", "jsonl")
    assert [p.id for p in good] == ["generic:1", "generic:4"]
    assert [b.record for b in bad] == ["line 2", "line 3"] and all("nested too deeply" in b.message for b in bad)

    acts = [json.dumps(mastodon_activity(Draft(str(i), f"toot {i}", T0), ACTOR)) for i in range(3)]
    (tmp_path / "outbox.json").write_text('{"orderedItems": [' + f"{acts[0]}, {arr}, {acts[2]}" + "]}")
    good, bad = _read(tmp_path / "outbox.json", "mastodon")
    assert len(good) == 2 and [b.record for b in bad] == ["#1"] and "nested too deeply" in bad[0].message


def test_records_cut_by_every_read_boundary_decode_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression guard for the streaming parser's fast path: with reads of 1..40 bytes every record (numbers,
    literals, escapes, multi-byte characters) is cut somewhere, and each still decodes as json.loads would."""
    from roost.corpus.importers import jsonstream
    from roost.corpus.importers.jsonstream import Item, iter_json_array

    recs = [{"s": 'x"y\\z\u00e9\U0001f600', "n": [1, 2.5, -3e5, True, False, None]}, 12345678, -0.5, "q\\\"",
            True, None, [[], {}], {"deep": [[[[1]]]]}, 1e100, "ß" * 30]  # fmt: skip
    data = (
        "window.YTD.tweets.part0 = [\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in recs) + "]"
    ).encode()
    bad = b'[{"a": 1}, {"b": oops}, {"c": 3}, {"d": tru}, {"e": 5}]'
    for chunk in range(1, 41):
        monkeypatch.setattr(jsonstream, "CHUNK", chunk)
        out = list(iter_json_array(io.BytesIO(data), "f"))
        assert [o.value for o in out if isinstance(o, Item)] == recs and len(out) == len(recs), chunk
        out = list(iter_json_array(io.BytesIO(bad), "f"))
        assert [o.index if isinstance(o, Item) else o.record for o in out] == [0, "#1", 2, "#3", 4], (chunk, out)


# ----------------------------------------------------------------------------------- generated damage (Hypothesis)


def _seed_values() -> dict[str, tuple[str, str, list]]:
    """A small valid export per format as values to edit: (file name, format, records)."""
    drafts = [Draft(str(100 + i), f"post {i} with #tag, @bob and https://ex.org/{i}", T0) for i in range(3)]
    with tempfile.TemporaryDirectory() as d:
        x = write_x_archive(Path(d) / "x", "ann", "1", drafts)
        tweets = json.loads((x / "data/tweets.js").read_text().split("=", 1)[1])
        car = write_bluesky_car(Path(d) / "r.car", "did:plc:s", [Draft(f"3k{i}", f"sky {i} #t", T0) for i in range(3)])
        blocks = [[cid, libipld.decode_dag_cbor(data)] for cid, data in _car_frames(car.read_bytes())]
    row = {"author": "ann", "created_at": "2024-01-01T00:00:00Z", "hashtags": ["a"], "reply_to": "9"}
    return {"x": ("x.zip", "x-archive", tweets), "car": ("r.car", "bluesky", blocks),
            "mastodon": ("outbox.json", "mastodon", [mastodon_activity(d, ACTOR) for d in drafts]),
            "jsonl": ("p.jsonl", "jsonl", [{**row, "id": str(i), "text": f"line {i}"} for i in range(3)])}  # fmt: skip


def _car_frames(data: bytes) -> list[tuple[bytes, bytes]]:
    from roost.corpus.importers.bluesky import _cid_len, _varint

    hlen, pos = _varint(data, 0)
    pos += hlen
    out = []
    while pos < len(data):
        size, start = _varint(data, pos)
        clen = _cid_len(data, start)
        out.append((data[start : start + clen], data[start + clen : start + size]))
        pos = start + size
    return out


def _render(kind: str, records: list) -> bytes:
    """The file an export of these (edited) records is."""
    if kind == "x":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("data/account.js", ACCOUNT)
            zf.writestr("data/tweets.js", "window.YTD.tweets.part0 = " + json.dumps(records, indent=1, default=str))
        return buf.getvalue()
    if kind == "mastodon":
        return json.dumps({"type": "OrderedCollection", "orderedItems": records}, indent=1, default=str).encode()
    if kind == "jsonl":
        return b"\n".join(json.dumps(r, default=str).encode() for r in records)
    from roost.demo.writers import _varint

    header = libipld.encode_dag_cbor({"version": 1, "roots": [records[0][0]]})
    frames = []
    for cid, value in records:
        data = libipld.encode_dag_cbor(value)
        frames.append(_varint(len(cid) + len(data)) + cid + data)
    return _varint(len(header)) + header + b"".join(frames)


SEEDS = _seed_values()
# Values a hostile export puts where another type is expected (all DAG-CBOR encodable, for the CAR as well).
ODD: list[object] = [None, 0, -1, 1 << 40, 1.5, True, "", "x", "[", [], {}, [1], [None], [{"id": 1}], {"id": {}}, {"": []},
       b"\x00", [[[[[[]]]]]], {"k": {"k": {"k": {}}}}]  # fmt: skip
_edit = st.tuples(st.lists(st.floats(0, 1, exclude_max=True), min_size=1, max_size=6), st.sampled_from(ODD))
_byte_damage = st.one_of(
    st.tuples(st.just("cut"), st.floats(0, 1)),
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=40)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.sampled_from([b"[" * 3000, b'{"a":' * 3000, b'"', b"\x81" * 3000])),
)  # fmt: skip


def _retype(value: object, path: list[float], new: object) -> object:
    """`value` with the node that `path` picks (a fraction per level) replaced by `new`."""
    if not path or not isinstance(value, (list, dict)) or not value:
        return new
    keys = list(value) if isinstance(value, dict) else list(range(len(value)))
    k = keys[int(path[0] * len(keys))]
    out = dict(value) if isinstance(value, dict) else list(value)
    out[k] = _retype(value[k], path[1:], new)  # type: ignore[index]
    return out


def _damage(data: bytes, ops: list[tuple]) -> bytes:
    buf = bytearray(data)
    for op in ops:
        at = int(op[1] * len(buf))
        if op[0] == "cut":
            del buf[at:]
        elif op[0] == "flip" and buf:
            buf[min(at, len(buf) - 1)] = op[2]
        elif op[0] == "insert":
            buf[at:at] = op[2]
    return bytes(buf)


@pytest.mark.parametrize("kind", sorted(SEEDS))
@settings(max_examples=30, deadline=None)
@given(edits=st.lists(_edit, max_size=3), damage=st.lists(_byte_damage, max_size=3))
def test_damaged_exports_never_crash_an_importer(kind: str, edits: list[tuple], damage: list[tuple]) -> None:
    """Values of the wrong type anywhere in a record, then truncation, byte flips or garbage anywhere in the file:
    only Posts and BadRecords come out (or a RoostError for a file that is no longer of its format), and no
    importer gives up mid-file with an exception (guarded's "cannot read further")."""
    check_damaged(kind, edits, damage)


def check_damaged(kind: str, edits: list[tuple], damage: list[tuple]) -> None:
    name, fmt, records = SEEDS[kind]
    for path, new in edits:  # in a CAR, edit a block's value (its [cid, value] second half), never its CID
        records = _retype(records, [path[0], 0.5, *path[1:]] if kind == "car" else path, new)  # type: ignore[assignment]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        path.write_bytes(_damage(_render(kind, records), damage))
        try:
            out = list(guarded(read_export(path, fmt, ImportOptions()), str(path)))
        except RoostError:
            return  # the whole file is not of its format: one clear line, by design
    assert all(isinstance(r, (Post, BadRecord)) for r in out)
    crashed = [r for r in out if isinstance(r, BadRecord) and r.message.startswith("cannot read further")]
    assert not crashed, crashed  # the importer handled the damage itself: a message, not an exception's repr
