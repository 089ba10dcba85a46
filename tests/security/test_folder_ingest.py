"""`roost ingest FOLDER` reads what it can and says what it skipped: inside a folder it searches (and inside an
unpacked X archive or Mastodon folder) only regular files are opened, symbolic links are not followed, and a file
it cannot read or recognise is skipped with a message naming it and why; every other export in the folder is
ingested and the exit code is 0. A path named on the command line is the operator's choice: a symlink there is
followed, but a FIFO, socket or device is refused (it is never opened).

Attacks and outcomes (all through the real CLI):
- issue 24 #10: a FIFO in the exports folder hung `roost ingest` for ever (detection opened and read it). Now it
  is skipped unopened ("not a regular file"), in seconds (`test_folder_with_fifo_readme_and_links`).
- issue 24 #10: one readme.txt aborted the whole folder ("cannot tell the format"). Now it is skipped with that
  message and the exports before and after it are stored.
- a symlink in the exports folder, or data/tweets-part1.js in an unpacked X archive, pointing at a file outside
  (a way to pull a private file into the corpus): skipped, named, its contents not stored.
- an empty sub-folder: skipped with a message. A FIFO named on the command line: refused, exit non-zero, no hang
  (`test_fifo_named_on_the_command_line_is_refused`).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.conftest import Cli


def _jsonl(prefix: str, n: int) -> str:
    rows = [
        {
            "id": f"{prefix}{i}",
            "author": "ann",
            "created_at": "2024-01-01T00:00:00Z",
            "text": f"{prefix} post {i} on trams",
        }
        for i in range(n)
    ]
    return "".join(json.dumps(r) + "\n" for r in rows)


def _ytd(name: str, records: list) -> str:
    return f"window.YTD.{name}.part0 = " + json.dumps(records)


def _tweet(tid: str, text: str) -> dict:
    return {"tweet": {"id_str": tid, "created_at": "Wed Oct 10 20:19:24 +0000 2018", "full_text": text, "entities": {}}}


@pytest.mark.timeout(60)
def test_folder_with_fifo_readme_and_links(cli: Cli, tmp_path: Path) -> None:
    ex = tmp_path / "exports"
    ex.mkdir()
    (ex / "a-posts.jsonl").write_text(_jsonl("early", 3))
    os.mkfifo(ex / "b-pipe.jsonl")
    (ex / "c-readme.txt").write_text("These are my exports, see the other files.\n")
    secret = tmp_path / "private" / "secret.jsonl"
    secret.parent.mkdir()
    secret.write_text(_jsonl("secret", 2))
    (ex / "d-link.jsonl").symlink_to(secret)
    (ex / "e-empty").mkdir()
    archive = ex / "f-twitter"  # an unpacked X archive with a part file linked to a file outside it
    (archive / "data").mkdir(parents=True)
    (archive / "data" / "account.js").write_text(_ytd("account", [{"account": {"username": "ann"}}]))
    (archive / "data" / "tweets.js").write_text(_ytd("tweets", [_tweet("11", "a tweet from the archive")]))
    (tmp_path / "private" / "more.js").write_text(_ytd("tweets", [_tweet("12", "secret tweet")]))
    (archive / "data" / "tweets-part1.js").symlink_to(tmp_path / "private" / "more.js")
    (ex / "z-posts.jsonl").write_text(_jsonl("late", 2))

    t0 = time.monotonic()
    r = cli("ingest", "--workers", "1", str(ex))
    assert time.monotonic() - t0 < 30
    ids = set(cli.posts())
    assert {i for i in ids if "early" in i or "late" in i} == {f"generic:early{i}" for i in range(3)} | {
        f"generic:late{i}" for i in range(2)
    }, ids
    assert "x:11" in ids and "x:12" not in ids and not [i for i in ids if "secret" in i], ids
    out = " ".join(r.output.split())
    for name, why in [
        ("b-pipe.jsonl", "not a regular file"),
        ("c-readme.txt", "cannot tell the format"),
        ("d-link.jsonl", "symbolic link"),
        ("e-empty", "no export found"),
        ("tweets-part1.js", "symbolic link"),
    ]:
        assert name in out and why in out, (name, why, r.output)


@pytest.mark.timeout(60)
def test_fifo_named_on_the_command_line_is_refused(cli: Cli, tmp_path: Path) -> None:
    fifo = tmp_path / "posts.jsonl"
    os.mkfifo(fifo)
    for args in ([str(fifo)], ["--format", "jsonl", str(fifo)]):
        r = cli("ingest", *args, ok=False)
        assert r.exit_code != 0 and "not a regular file" in r.output and "Traceback" not in r.output, r.output


@pytest.mark.timeout(60)
def test_a_folder_nested_too_deep_is_skipped_not_a_crash(cli: Cli, tmp_path: Path) -> None:
    """Review of the fix: a 1,100-level-deep folder crashed `roost ingest` with a RecursionError traceback."""
    ex = tmp_path / "exports"
    deep = ex / "/".join(["d"] * 200)
    deep.mkdir(parents=True)
    (deep / "posts.jsonl").write_text(_jsonl("deep", 2))
    (ex / "top.jsonl").write_text(_jsonl("top", 3))
    out = cli("ingest", str(ex))
    assert "Traceback" not in out.output and "folders deep; not searched" in out.output
    assert cli.sql("SELECT count(*) FROM posts")[0][0] == 3
