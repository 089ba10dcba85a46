"""X archive importer on hand-written files in the archive's own format (as X writes them), folder and zip."""

from __future__ import annotations

import json
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from roost.corpus.importers import ImportOptions, detect_format, read_export
from roost.corpus.post import BadRecord, Post

ACCOUNT = """window.YTD.account.part0 = [
  {
    "account" : {
      "email" : "alice@example.invalid",
      "createdVia" : "web",
      "username" : "alice",
      "accountId" : "12345",
      "createdAt" : "2010-01-01T00:00:00.000Z",
      "accountDisplayName" : "Alice"
    }
  }
]"""


def tweet(id_: str, text: str, created: str = "Wed Oct 10 20:19:24 +0000 2018", **extra: object) -> dict:
    t = {
        "retweeted": False,
        "source": '<a href="https://x.com">web</a>',
        "entities": {"hashtags": [], "symbols": [], "user_mentions": [], "urls": []},
        "display_text_range": ["0", str(len(text))],
        "favorite_count": "0",
        "id_str": id_,
        "truncated": False,
        "retweet_count": "0",
        "id": id_,
        "created_at": created,
        "favorited": False,
        "full_text": text,
        "lang": "en",
    }
    t.update(extra)
    return {"tweet": t}


TWEETS = [
    tweet(
        "100",
        "Launching our #garden club! Details: https://t.co/abc123 cc @bob",
        entities={
            "hashtags": [{"text": "garden", "indices": ["14", "21"]}],
            "symbols": [],
            "user_mentions": [{"name": "Bob", "screen_name": "bob", "indices": ["60", "64"], "id_str": "9", "id": "9"}],
            "urls": [
                {
                    "url": "https://t.co/abc123",
                    "expanded_url": "https://garden.example/club",
                    "display_url": "garden.example/club",
                    "indices": ["31", "54"],
                }
            ],
        },
    ),
    tweet(
        "101",
        "@bob yes, Tuesday &amp; Thursday",
        created="Thu Oct 11 08:00:00 +0200 2018",
        in_reply_to_status_id_str="99",
        in_reply_to_status_id="99",
        in_reply_to_screen_name="bob",
    ),
    tweet("102", "RT @carol: tomatoes are fruit", created="Fri Oct 12 10:00:00 +0000 2018"),
    tweet(
        "103",
        "so true https://t.co/q1",
        created="Sat Oct 13 10:00:00 +0000 2018",
        entities={
            "hashtags": [],
            "symbols": [],
            "user_mentions": [],
            "urls": [
                {
                    "url": "https://t.co/q1",
                    "expanded_url": "https://twitter.com/carol/status/555",
                    "display_url": "twitter.com/carol/status/555",
                    "indices": ["8", "23"],
                }
            ],
        },
    ),
    tweet(
        "104",
        "This is the start of a very long post that X cut short… https://t.co/zz",
        created="Sun Oct 14 10:00:00 +0000 2018",
    ),
]
PART1 = [tweet("105", "second part file", created="Mon Oct 15 10:00:00 +0000 2018")]
NOTES = [
    {
        "noteTweet": {
            "noteTweetId": "777",
            "createdAt": "2018-10-14T10:00:00.000Z",
            "updatedAt": "2018-10-14T10:00:00.000Z",
            "core": {
                "text": "This is the start of a very long post that X cut short, and here is all the rest of it.",
                "urls": [],
                "mentions": [],
                "hashtags": [{"text": "long"}],
                "cashtags": [],
            },
        }
    }
]
DELETED = [tweet("106", "I regret this", created="Tue Oct 16 10:00:00 +0000 2018", deleted_at="2018-10-17")]


def ytd(name: str, part: int, records: list) -> str:
    return f"window.YTD.{name}.part{part} = " + json.dumps(records, indent=2)


def write_archive(root: Path, as_zip: bool = False) -> Path:
    files = {
        "data/account.js": ACCOUNT,
        "data/tweets.js": ytd("tweets", 0, TWEETS),
        "data/tweets-part1.js": ytd("tweets", 1, PART1),
        "data/note-tweet.js": ytd("note_tweet", 0, NOTES),
        "data/deleted-tweets.js": ytd("deleted_tweets", 0, DELETED),
        "Your archive.html": "<html></html>",
    }
    if as_zip:
        path = root.with_suffix(".zip")
        with zipfile.ZipFile(path, "w") as z:
            for name, text in files.items():
                z.writestr(name, text)
        return path
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize("as_zip", [False, True])
def test_archive_maps_every_field(tmp_path: Path, as_zip: bool) -> None:
    path = write_archive(tmp_path / "twitter-2024", as_zip)
    assert detect_format(path) == "x-archive"
    out = list(read_export(path, "x-archive", ImportOptions()))
    bad = [r for r in out if isinstance(r, BadRecord)]
    assert not bad, bad
    by_id = {p.id: p for p in out if isinstance(p, Post)}
    assert set(by_id) == {"x:100", "x:101", "x:102", "x:103", "x:104", "x:105"}  # deleted excluded by default
    p = by_id["x:100"]
    assert p.author == "alice" and p.source == "x"
    assert p.created_at == datetime(2018, 10, 10, 20, 19, 24, tzinfo=UTC)
    assert "https://garden.example/club" in p.text and "t.co" not in p.text
    assert p.hashtags == ["garden"] and p.mentions == ["bob"] and p.urls == ["https://garden.example/club"]
    r = by_id["x:101"]
    assert r.reply_to == "x:99" and r.created_at == datetime(2018, 10, 11, 6, 0, tzinfo=UTC)
    assert by_id["x:102"].repost_of == "@carol"
    assert by_id["x:103"].quote_of == "x:555"
    long = by_id["x:104"]
    assert long.text.endswith("all the rest of it.") and long.hashtags == ["long"]


def test_deleted_tweets_only_when_asked(tmp_path: Path) -> None:
    path = write_archive(tmp_path / "a")
    out = [r for r in read_export(path, "x-archive", ImportOptions(include_deleted=True)) if isinstance(r, Post)]
    assert "x:106" in {p.id for p in out}


def test_missing_account_is_reported_not_fatal(tmp_path: Path) -> None:
    path = write_archive(tmp_path / "a")
    (path / "data" / "account.js").unlink()
    out = list(read_export(path, "x-archive", ImportOptions()))
    bad = [r for r in out if isinstance(r, BadRecord)]
    assert any("account.js" in str(b) for b in bad)
    # without an author and without a user field, each tweet is rejected by name, not silently dropped
    assert sum(1 for b in bad if b.field == "user.screen_name") == 6


def test_ingest_cli_archive_and_retweet_with_status(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import posts

    path = write_archive(tmp_path / "a", as_zip=True)
    result = cli("ingest", str(path))
    assert "stored (new)" in result.output
    rows = posts(cli.home / "corpus.db")
    assert rows["x:101"]["text"] == "@bob yes, Tuesday & Thursday"  # entity decoded
    assert rows["x:102"]["repost_of"] == "@carol" and rows["x:102"]["dup_of"] is None
    assert json.loads(rows["x:100"]["hashtags"]) == ["garden"]
