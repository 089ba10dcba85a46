"""X/Twitter archive importer: the downloaded `.zip` or its unpacked folder.

`roost ingest twitter-2024-01-01-abc.zip` (or the folder). Reads the author from `data/account.js`, posts from
`data/tweets.js` / `tweet.js` and their `-partN` siblings (`window.YTD.tweets.part0 = [...]`), joins long
posts from `note-tweet.js` to their truncated tweet, and skips `deleted-tweets.js` unless asked. The tweet
→ Post mapping is shared with the Twitter API importer (v1.1 objects have the same shape).
"""

from __future__ import annotations

import html
import re
import zipfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from roost.corpus.importers.jsonstream import Item, iter_json_array
from roost.corpus.post import BadRecord, Post, RecordError, parse_iso_date, parse_twitter_date

_STATUS_URL = re.compile(r"^https?://(?:mobile\.)?(?:twitter|x)\.com/(?:\w+|i/web)/status(?:es)?/(\d+)")
_RT = re.compile(r"^RT @(\w{1,30}):")
_TCO = re.compile(r"\s*https?://t\.co/\w+\s*$")
_PART = r"(?:-part\d+)?\.js$"
TWEETS = re.compile(r"(?:^|/)data/tweets?" + _PART)
NOTES = re.compile(r"(?:^|/)data/note-tweet" + _PART)
DELETED = re.compile(r"(?:^|/)data/deleted-tweets?" + _PART)
ACCOUNT = re.compile(r"(?:^|/)data/account\.js$")


class ArchiveFiles:
    """The files of an archive, from a zip or a folder, by their path inside the archive."""

    def __init__(self, path: Path):
        self.path = path
        self.zip = zipfile.ZipFile(path) if path.is_file() else None
        if self.zip is not None:
            self.names = sorted(n for n in self.zip.namelist() if not n.endswith("/"))
        else:
            self.names = sorted(p.relative_to(path).as_posix() for p in path.rglob("*.js") if p.is_file())

    def open(self, name: str) -> IO[bytes]:
        if self.zip is not None:
            return self.zip.open(name)
        return open(self.path / name, "rb")

    def label(self, name: str) -> str:
        return f"{self.path}!{name}" if self.zip is not None else str(self.path / name)

    def find(self, pattern: re.Pattern[str]) -> list[str]:
        return sorted((n for n in self.names if pattern.search(n)), key=_part_order)


def _part_order(name: str) -> tuple[str, int]:
    m = re.search(r"-part(\d+)\.js$", name)
    return (re.sub(r"-part\d+\.js$", ".js", name), int(m.group(1)) if m else 0)


def is_x_archive(path: Path) -> bool:
    try:
        if path.is_dir():
            return (path / "data").is_dir() and any(TWEETS.search(p.as_posix()) for p in (path / "data").glob("*.js"))
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                return any(TWEETS.search(n) for n in z.namelist())
    except OSError:
        return False
    return False


def _unwrap(item: Any, key: str) -> dict:
    if isinstance(item, dict) and isinstance(item.get(key), dict):
        return item[key]
    if isinstance(item, dict):
        return item
    raise RecordError(None, f"expected an object, got {type(item).__name__}")


def tweet_to_post(t: dict, author: str | None, source: str = "x") -> Post:
    """Map one tweet object (X archive `tweet`, or API v1.1 status) to a Post."""
    if not isinstance(t, dict):
        raise RecordError(None, f"expected a tweet object, got {type(t).__name__}")
    tid = t.get("id_str") or t.get("id")
    if isinstance(tid, int) and not isinstance(tid, bool):
        tid = str(tid)
    if not isinstance(tid, str) or not (tid.isascii() and tid.isdigit()):
        raise RecordError("id_str", "missing or not a numeric id")
    if author is None:
        user = t.get("user")
        author = user.get("screen_name") if isinstance(user, dict) else None
        if not isinstance(author, str) or not author:
            raise RecordError("user.screen_name", "missing (no author for this tweet)")
    ext = t.get("extended_tweet")
    text = ext.get("full_text") if isinstance(ext, dict) and ext.get("full_text") else None
    text = text or t.get("full_text") or t.get("text")
    if not isinstance(text, str):
        raise RecordError("full_text", "missing" if text is None else f"expected a string, got {type(text).__name__}")
    entities = (ext.get("entities") if isinstance(ext, dict) else None) or t.get("entities") or {}
    if not isinstance(entities, dict):
        raise RecordError("entities", f"expected an object, got {type(entities).__name__}")
    post = Post(
        id=f"x:{tid}",
        author=author,
        created_at=parse_twitter_date(t.get("created_at")),
        text=text,
        source=source,
        lang=t.get("lang") if isinstance(t.get("lang"), str) else None,
    )
    quote = t.get("quoted_status_id_str") or t.get("quoted_status_id")
    urls = []
    for u in _entity_list(entities, "urls"):
        expanded, short = u.get("expanded_url"), u.get("url")
        if isinstance(expanded, str) and expanded:
            if isinstance(short, str) and short:
                post.text = post.text.replace(short, expanded)
            m = _STATUS_URL.match(expanded)
            if m and quote is None:
                quote = m.group(1)
            urls.append(expanded)
    for media in _entity_list(entities, "media") + _entity_list(t.get("extended_entities") or {}, "media"):
        short = media.get("url")
        if isinstance(short, str) and short:
            post.text = post.text.replace(short, "").rstrip()
    post.urls = urls
    post.hashtags = [h["text"] for h in _entity_list(entities, "hashtags") if isinstance(h.get("text"), str)]
    post.mentions = [
        m["screen_name"] for m in _entity_list(entities, "user_mentions") if isinstance(m.get("screen_name"), str)
    ]
    reply = t.get("in_reply_to_status_id_str") or t.get("in_reply_to_status_id")
    post.reply_to = f"x:{reply}" if reply else None
    post.quote_of = f"x:{quote}" if quote else None
    rt = t.get("retweeted_status")
    if isinstance(rt, dict) and (rt.get("id_str") or rt.get("id")):
        post.repost_of = f"x:{rt.get('id_str') or rt.get('id')}"
    else:
        m = _RT.match(text)
        if m:
            post.repost_of = "@" + m.group(1)  # archives keep only whose post it was
    return post


def _entity_list(entities: Any, key: str) -> list[dict]:
    if not isinstance(entities, dict):
        return []
    value = entities.get(key) or []
    if not isinstance(value, list):
        raise RecordError(f"entities.{key}", f"expected a list, got {type(value).__name__}")
    return [v for v in value if isinstance(v, dict)]


def _read_account(files: ArchiveFiles) -> tuple[str | None, list[BadRecord]]:
    names = files.find(ACCOUNT)
    if not names:
        return None, [
            BadRecord(
                str(files.path),
                "data/account.js",
                None,
                "missing: posts get the author from their own 'user' field or are rejected",
            )
        ]
    with files.open(names[0]) as fp:
        for item in iter_json_array(fp, files.label(names[0])):
            if isinstance(item, BadRecord):
                return None, [item]
            acc = _unwrap(item.value, "account")
            username = acc.get("username")
            if isinstance(username, str) and username:
                return username, []
            return None, [BadRecord(files.label(names[0]), "#0", "account.username", "missing")]
    return None, [BadRecord(files.label(names[0]), "#0", "account", "no account record")]


def _read_notes(files: ArchiveFiles) -> tuple[dict[int, list[dict]], list[BadRecord]]:
    """Long-post bodies (`noteTweet`) keyed by their creation second."""
    notes: dict[int, list[dict]] = {}
    bad: list[BadRecord] = []
    for name in files.find(NOTES):
        with files.open(name) as fp:
            for item in iter_json_array(fp, files.label(name)):
                if isinstance(item, BadRecord):
                    bad.append(item)
                    continue
                try:
                    note = _unwrap(item.value, "noteTweet")
                    core = note.get("core") or {}
                    if not isinstance(core.get("text"), str):
                        raise RecordError("core.text", "missing")
                    created = parse_iso_date(note.get("createdAt"), "createdAt")
                except RecordError as e:
                    bad.append(BadRecord(files.label(name), f"#{item.index}", e.field, e.message))
                    continue
                note["_used"] = False
                notes.setdefault(int(created.timestamp()), []).append(note)
    return notes, bad


def _join_note(post: Post, notes: dict[int, list[dict]]) -> None:
    """Replace a truncated tweet's text by its note-tweet body (same second ±1, same opening words)."""
    if not notes:
        return
    prefix = html.unescape(_TCO.sub("", post.text).rstrip("…").strip())[:40]
    sec = int(post.created_at.timestamp())
    for s in (sec, sec - 1, sec + 1):
        for note in notes.get(s, []):
            core = note["core"]
            if not note["_used"] and html.unescape(core["text"]).startswith(prefix):
                note["_used"] = True
                post.text = core["text"]
                post.urls = [
                    str(u.get("expandedUrl") or u.get("expanded_url"))
                    for u in core.get("urls") or []
                    if isinstance(u, dict) and (u.get("expandedUrl") or u.get("expanded_url"))
                ]
                post.hashtags = [
                    str(h.get("text")) for h in core.get("hashtags") or [] if isinstance(h, dict) and h.get("text")
                ]
                post.mentions = [
                    str(m.get("screenName") or m.get("screen_name"))
                    for m in core.get("mentions") or []
                    if isinstance(m, dict) and (m.get("screenName") or m.get("screen_name"))
                ]
                return


def read_x_archive(path: Path, include_deleted: bool = False) -> Iterator[Post | BadRecord]:
    files = ArchiveFiles(path)
    author, bad = _read_account(files)
    yield from bad
    notes, bad = _read_notes(files)
    yield from bad
    names = files.find(TWEETS) + (files.find(DELETED) if include_deleted else [])
    if not names:
        yield BadRecord(str(path), "data/tweets.js", None, "no tweets file in this archive")
    for name in names:
        label = files.label(name)
        with files.open(name) as fp:
            for item in iter_json_array(fp, label):
                if isinstance(item, BadRecord):
                    yield item
                    continue
                yield _convert(item, label, author, notes)
    for sec_notes in notes.values():  # long posts whose tweet is not in the archive: keep them on their own
        for note in sec_notes:
            if not note["_used"] and author:
                created: datetime = parse_iso_date(note["createdAt"])
                nid = str(note.get("noteTweetId") or int(created.timestamp()))
                yield Post(id=f"x:note-{nid}", author=author, created_at=created, text=note["core"]["text"], source="x")


def read_tweets_file(path: Path) -> Iterator[Post | BadRecord]:
    """A lone `tweets.js` outside its archive: each tweet needs its own `user` field for the author."""
    with open(path, "rb") as fp:
        for item in iter_json_array(fp, str(path)):
            yield item if isinstance(item, BadRecord) else _convert(item, str(path), None, {})


def _convert(item: Item, label: str, author: str | None, notes: dict[int, list[dict]]) -> Post | BadRecord:
    try:
        tweet = _unwrap(item.value, "tweet")
        post = tweet_to_post(tweet, author)
        _join_note(post, notes)
        return post
    except RecordError as e:
        tid = item.value.get("tweet", {}).get("id_str") if isinstance(item.value, dict) else None
        where = item.where + (f" (id {tid})" if isinstance(tid, str) else "")
        return BadRecord(label, where, e.field, e.message)
