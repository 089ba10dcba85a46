"""One bad record never aborts an ingest: it is rejected with file, record and reason, and the good records around
it, the rest of its file and later exports are kept. Two ingests at once make the same dedup decisions as one
after the other."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from roost.demo.writers import Draft, mastodon_activity, synthetic_drafts, write_x_archive
from tests.conftest import run_roost


def _good(i: int) -> dict:
    return {"id": f"g{i}", "author": "ann", "created_at": "2024-01-01T00:00:00Z", "text": f"good post {i} on trams"}


def _ids(home: Path) -> set[str]:
    return {r[0] for r in sqlite3.connect(home / "corpus.db").execute("SELECT id FROM posts")}


def test_bad_records_are_rejected_and_everything_else_kept(tmp_path: Path) -> None:
    g = lambda i: json.dumps(_good(i)).encode()  # noqa: E731
    (tmp_path / "1-surrogate.jsonl").write_bytes(
        g(1) + b'\n{"id": "bad\\ud800", "author": "ann", "created_at": "2024-01-01T00:00:00Z", "text": "x y"}\n' + g(2)
    )
    (tmp_path / "2-bytes.jsonl").write_bytes(
        g(3) + b'\n{"id": "bad\xff\xfe", "author": "ann", "created_at": "2024-01-01T00:00:00Z", "text": "x"}\n' + g(4)
    )
    deep = b'{"id": "deep", "author": "a", "created_at": "2024-01-01T00:00:00Z", "text": "x", "extra": '
    (tmp_path / "3-deep.jsonl").write_bytes(g(5) + b"\n" + deep + b"[" * 200_000 + b"]" * 200_000 + b"}\n" + g(6))
    (tmp_path / "4-nulls.json").write_text(json.dumps([_good(7), None, _good(8), 5, _good(9)]))
    out = run_roost(
        "--home", str(tmp_path / "h"), "ingest", "--format", "jsonl", *sorted(map(str, tmp_path.glob("*.js*")))
    )
    text = " ".join(out.stdout.split())
    assert "Traceback" not in out.stderr
    assert _ids(tmp_path / "h") == {f"generic:g{i}" for i in range(1, 10)}
    for where in ("1-surrogate.jsonl: record #2", "2-bytes.jsonl: record line 2: not valid UTF-8",
                  "3-deep.jsonl: record line 2: record nested too deeply", "4-nulls.json: record #1: expected an object",
                  "4-nulls.json: record #3"):  # fmt: skip
        assert where in text, where


def _outbox_tar(path: Path, kind: str) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("archive/outbox.json")
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        elif kind == "hardlink":
            info.type, info.linkname = tarfile.LNKTYPE, "archive/other.json"
        else:
            info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
        tar.addfile(info)
    return path


def test_mastodon_archive_with_link_or_device_members(tmp_path: Path) -> None:
    actor = "https://example.social/users/ann"
    ok = tmp_path / "ok.tar.gz"
    items = [
        mastodon_activity(Draft("1", "a perfectly fine toot about bread", datetime(2024, 1, 1, tzinfo=UTC)), actor)
    ]
    body = json.dumps({"orderedItems": items}).encode()
    with tarfile.open(ok, "w:gz") as tar:
        info = tarfile.TarInfo("archive/outbox.json")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    bad = [_outbox_tar(tmp_path / f"{k}.tar.gz", k) for k in ("symlink", "hardlink", "device")]
    out = run_roost("--home", str(tmp_path / "h"), "ingest", "--format", "mastodon", *map(str, bad), str(ok))
    text = " ".join(out.stdout.split())
    assert "is a symlink" in text and "is a hard link" in text and "not a regular file" in text
    assert len(_ids(tmp_path / "h")) == 1 and "Traceback" not in out.stderr


def test_two_ingests_at_once_equal_one_after_the_other(tmp_path: Path) -> None:
    drafts = synthetic_drafts(3000, seed=11)
    t0 = datetime(2024, 2, 1, tzinfo=UTC)
    a = write_x_archive(tmp_path / "a", "alice", "1", drafts)
    copies = [Draft(str(9_000_000 + i), d.text, t0 + timedelta(minutes=i)) for i, d in enumerate(drafts[:1500])]
    b = write_x_archive(tmp_path / "b", "bob", "2", copies)
    run_roost("--home", str(tmp_path / "seq"), "ingest", "-q", str(a))
    run_roost("--home", str(tmp_path / "seq"), "ingest", "-q", str(b))
    exe = Path(sys.executable).with_name("roost")
    env = {**os.environ, "COLUMNS": "200"}
    procs = [
        subprocess.Popen([str(exe), "--home", str(tmp_path / "par"), "ingest", "-q", str(p)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for p in (a, b)
    ]  # fmt: skip
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs

    def kept(home: Path) -> int:
        q = "SELECT count(*) FROM posts WHERE dup_of IS NULL AND near_dup_of IS NULL AND repost_of IS NULL"
        return sqlite3.connect(home / "corpus.db").execute(q).fetchone()[0]

    assert kept(tmp_path / "par") == kept(tmp_path / "seq")  # b's 1500 copies are duplicates either way


def test_out_of_range_dates_huge_numbers_and_truncated_archives(tmp_path: Path) -> None:
    lines = [
        json.dumps(_good(1)),
        '{"id": "d", "author": "a", "created_at": "0001-01-01T00:00:00+14:00", "text": "too early"}',
        json.dumps(_good(2)),
        '{"id": "n", "author": "a", "created_at": "2024-01-01T00:00:00Z", "text": "t", "x": ' + "9" * 5000 + "}",
        json.dumps(_good(3)),
    ]
    (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "arr.json").write_text("[" + lines[3] + "," + json.dumps(_good(4)) + "]")
    out = run_roost("--home", str(tmp_path / "h"), "ingest", "--format", "jsonl", str(tmp_path / "a.jsonl"),
                    str(tmp_path / "arr.json"))  # fmt: skip
    text = " ".join(out.stdout.split())
    assert _ids(tmp_path / "h") == {f"generic:g{i}" for i in (1, 2, 3, 4)}
    assert "date out of range" in text and "4300" in text
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 26)  # a gzip header and nothing after it
    p = run_roost("--home", str(tmp_path / "h2"), "ingest", str(cut), check=False)
    assert p.returncode != 0 and "cut.tar.gz: not a readable tar archive" in p.stderr and "Traceback" not in p.stderr


def test_generic_records_with_wrong_types_are_rejected(tmp_path: Path) -> None:
    base = {"author": "a", "created_at": "2024-01-01T00:00:00Z", "text": "fine text here"}
    rows = [
        {**base, "id": "ok"},
        {**base, "id": []},
        {**base, "id": True},
        {**base, "id": 1.5},
        {**base, "id": "tags", "hashtags": [None, 1, {"a": 1}]},
    ]
    lines = [json.dumps(r) for r in rows] + [
        '{"id": "nan", "author": "a", "created_at": "2024-01-01T00:00:00Z", "text": NaN}'
    ]
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n")
    out = " ".join(run_roost("--home", str(tmp_path / "h"), "ingest", str(tmp_path / "t.jsonl")).stdout.split())
    assert _ids(tmp_path / "h") == {"generic:ok"}
    for line, why in ((2, "'id': expected a string or integer, got list"), (3, "got bool"), (4, "got float"),
                      (5, "'hashtags': expected a list of strings"), (6, "'text': not a number")):  # fmt: skip
        assert f"record line {line}, field {why}" in out or (f"record line {line}" in out and why in out), why


def test_server_posts_racing_a_cli_ingest_miss_no_copy(tmp_path: Path) -> None:
    """A server's `POST /v1/posts` and a `roost ingest` writing at once: no copy is missed whichever process
    stored its original first (both decide under the store's write lock after reading the other's rows). The
    originals kept are checked in store order: none repeats an earlier one's text or is a near copy of it."""
    from roost.config import CorpusConfig
    from roost.corpus.dedup import NearDupIndex
    from roost.corpus.ingest import LiveIngest
    from roost.corpus.post import Post

    drafts = synthetic_drafts(4000, seed=5)
    a = write_x_archive(tmp_path / "a", "alice", "1", drafts)
    t0 = datetime(2024, 3, 1, tzinfo=UTC)
    copies = [Post(f"c{i}", "bob", t0 + timedelta(minutes=i), d.text, "api") for i, d in enumerate(drafts[::-1])]
    db = tmp_path / "par" / "corpus.db"
    live = LiveIngest(db, CorpusConfig())
    exe = Path(sys.executable).with_name("roost")
    proc = subprocess.Popen([str(exe), "--home", str(tmp_path / "par"), "ingest", "-q", str(a)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    for i in range(0, len(copies), 20):  # in reverse order, so each side stores some originals first
        live.add(copies[i : i + 20])
    out = proc.communicate(timeout=300)
    live.close()
    assert proc.returncode == 0, out
    con = sqlite3.connect(db)
    kept = con.execute(
        "SELECT p.id, p.text_hash, s.sig, p.run_id FROM posts p LEFT JOIN signatures s ON s.post_id = p.id "
        "WHERE dup_of IS NULL AND near_dup_of IS NULL AND repost_of IS NULL ORDER BY p.seq"
    ).fetchall()
    assert len({r[3] for r in kept}) == 2  # both writers stored originals
    assert len({r[1] for r in kept}) == len(kept)  # no exact copy kept twice
    cfg = CorpusConfig()
    near = NearDupIndex(cfg.near_dup_threshold, cfg.num_perm)
    for pid, _, sig, _ in kept:
        if sig is not None:
            v = np.frombuffer(sig, dtype=np.uint32)
            assert near.match(v) is None, pid  # no near copy of an earlier original kept
            near.add(pid, v)
