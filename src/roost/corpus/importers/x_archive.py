"""X/Twitter archive importer: the downloaded `.zip` or its unpacked folder.

`roost ingest twitter-2024-01-01-abc.zip` (or the folder). Reads the author from `data/account.js`, posts from
`data/tweets.js` / `tweet.js` and their `-partN` siblings (`window.YTD.tweets.part0 = [...]`), joins long
posts from `note-tweet.js` to their truncated tweet, and skips `deleted-tweets.js` unless asked. The tweet
→ Post mapping is shared with the Twitter API importer (v1.1 objects have the same shape).

The archive's files are read from its own `data/` folder only: at the root of the zip or folder, or else under a
top-level folder (an archive unpacked into, or zipped again from, its own folder: `twitter-2024…/data/tweets.js`).
A `data/tweets.js` in any other folder is not the archive's and is not read (one BadRecord lists those folders);
deeper ones are not looked for.

In a folder, a file (or the folder it is in) that is a symbolic link, FIFO, socket or device is not opened: one
BadRecord names it (`importers/paths.py`).

A zip member is read within the member budgets (`importers/limits.py`): one whose header declares more than
`max_member_bytes`, or more than `max_ratio` times its compressed size, is refused unread (zipfile never yields
more than the declared size); so is one that would take the members read from the archive together past
`max_archive_bytes` or `max_ratio` (past `ratio_floor_bytes`). A damaged member ends with a BadRecord naming it,
and the other members are read.
"""

from __future__ import annotations

import html
import io
import re
import zipfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from roost.corpus.importers.jsonstream import CHUNK, Item, iter_json_array
from roost.corpus.importers.limits import (
    ARCHIVE_ERRORS,
    DEFAULT,
    LimitedReader,
    Limits,
    StreamError,
    archive_verdict,
    member_verdict,
)
from roost.corpus.importers.paths import refusal_inside
from roost.corpus.post import BadRecord, Post, RecordError, parse_iso_date, parse_twitter_date

_STATUS_URL = re.compile(r"^https?://(?:mobile\.)?(?:twitter|x)\.com/(?:\w+|i/web)/status(?:es)?/(\d+)")
_RT = re.compile(r"^RT @(\w{1,30}):")
# The t.co link X appends to a truncated tweet: matched, anchored, on the last TCO_TAIL characters of the stripped
# text only (searched over the whole text as `\s*…\s*$` it was quadratic in a run of blanks: issue 24).
_TCO = re.compile(r"https?://t\.co/\w+$")
TCO_TAIL = 64
# Long posts compared with one truncated tweet (those created within a second of it): a person posts far fewer,
# and without a cap an archive of many tweets and notes in one second costs tweets x notes comparisons.
NOTE_CANDIDATES = 32
_PART = r"(?:-part\d+)?\.js$"
# The archive's files, by their path from the archive's root (see ArchiveFiles.root).
TWEETS = re.compile(r"^data/tweets?" + _PART)
NOTES = re.compile(r"^data/note-tweet" + _PART)
DELETED = re.compile(r"^data/deleted-tweets?" + _PART)
ACCOUNT = re.compile(r"^data/account\.js$")
# A tweets file at the root of a zip, or under one top-level folder (group 1): where an archive's root may be.
_ROOTED_TWEETS = re.compile(r"^(?:([^/]+)/)?data/tweets?" + _PART)


def archive_roots(names: list[str]) -> list[str]:
    """The folders of a zip or folder (as "" or "name/") that hold an archive's data/tweets.js: the root first."""
    roots = {(m.group(1) or "") for n in names if (m := _ROOTED_TWEETS.match(n))}
    return sorted((r + "/" if r else "") for r in roots)


class ArchiveFiles:
    """The files of an archive, from a zip or a folder, by their path inside the archive."""

    def __init__(self, path: Path, limits: Limits = DEFAULT):
        self.path, self.limits = path, limits
        self.zip = zipfile.ZipFile(path) if path.is_file() else None
        self.root = ""  # the archive's own folder: its data/ is read, any other is not
        self.others: list[str] = []  # other folders with a data/tweets.js of their own
        self.refused: list[tuple[str, str]] = []  # files of a folder not opened (links, FIFOs...), with why
        if self.zip is not None:
            self.names = sorted(n for n in self.zip.namelist() if not n.endswith("/"))
        else:  # the folder's data/, or that of the one folder in it (an archive unpacked into its own folder)
            found = sorted({*path.glob("data/*.js"), *path.glob("*/data/*.js")})
            verdicts = {p.relative_to(path).as_posix(): refusal_inside(path, p) for p in found}
            self.names = [n for n, why in verdicts.items() if why is None and (path / n).is_file()]
            self.refused = [(n, why) for n, why in verdicts.items() if why is not None]
        roots = archive_roots(self.names)
        if roots:
            self.root, self.others = roots[0], roots[1:]
        self.unpacked = 0  # declared uncompressed bytes of the zip members opened so far
        self.packed = 0  # ... and their compressed bytes

    def open(self, name: str) -> IO[bytes]:
        """A member as a stream; StreamError when its sizes, or those of the members opened before it and it
        together, are over budget, or it cannot be opened."""
        if self.zip is None:
            return open(self.path / name, "rb")
        try:
            info = self.zip.getinfo(name)
            verdict = member_verdict(info.file_size, info.compress_size, self.limits) or archive_verdict(
                self.unpacked + info.file_size, self.packed + info.compress_size, self.limits
            )
            if verdict is not None:
                raise StreamError(verdict)
            member = self.zip.open(info)
        except ARCHIVE_ERRORS as e:
            raise StreamError(f"unreadable archive member ({type(e).__name__}: {str(e)[:120]})") from None
        self.unpacked += info.file_size
        self.packed += info.compress_size
        reader = LimitedReader(member, self.limits, lambda: info.compress_size)
        return io.BufferedReader(reader, CHUNK)

    def items(self, name: str) -> Iterator[Item | BadRecord]:
        """The records of one member; a member that cannot be read is one BadRecord naming it."""
        label = self.label(name)
        try:
            fp = self.open(name)
        except StreamError as e:
            yield BadRecord(str(self.path), f"member {name}", None, str(e))
            return
        with fp:
            yield from iter_json_array(fp, label, limits=self.limits)

    def label(self, name: str) -> str:
        return f"{self.path}!{name}" if self.zip is not None else str(self.path / name)

    def find(self, pattern: re.Pattern[str]) -> list[str]:
        """The archive's files whose path from its root matches `pattern`, parts in order."""
        n0 = len(self.root)
        found = (n for n in self.names if n.startswith(self.root) and pattern.match(n[n0:]))
        return sorted(found, key=_part_order)


def _part_order(name: str) -> tuple[str, int]:
    m = re.search(r"-part(\d+)\.js$", name)
    return (re.sub(r"-part\d+\.js$", ".js", name), int(m.group(1)) if m else 0)


def is_x_archive(path: Path) -> bool:
    try:
        if path.is_dir():
            return (path / "data").is_dir() and any(
                TWEETS.match(f"data/{p.name}") for p in (path / "data").glob("*.js")
            )
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                return any(_ROOTED_TWEETS.match(n) for n in z.namelist())
    except ARCHIVE_ERRORS:  # a damaged zip is not an X archive (detect_format says so, in one line)
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
    for item in files.items(names[0]):
        if isinstance(item, BadRecord):
            return None, [item]
        value = item.value
        acc = value["account"] if isinstance(value, dict) and isinstance(value.get("account"), dict) else value
        username = acc.get("username") if isinstance(acc, dict) else None
        if isinstance(username, str) and username:
            return username, []
        return None, [BadRecord(files.label(names[0]), "#0", "account.username", "missing")]
    return None, [BadRecord(files.label(names[0]), "#0", "account", "no account record")]


def _read_notes(files: ArchiveFiles) -> tuple[dict[int, list[dict]], list[BadRecord]]:
    """Long-post bodies (`noteTweet`) keyed by their creation second."""
    notes: dict[int, list[dict]] = {}
    bad: list[BadRecord] = []
    held = 0
    for name in files.find(NOTES):
        for item in files.items(name):
            if isinstance(item, BadRecord):
                bad.append(item)
                continue
            if held >= files.limits.max_notes:
                why = f"more than {files.limits.max_notes} long posts (budget); the rest of this file is not read"
                bad.append(BadRecord(files.label(name), f"#{item.index}", None, why))
                break
            try:
                note = _unwrap(item.value, "noteTweet")
                core = note.get("core")
                if not isinstance(core, dict) or not isinstance(core.get("text"), str):
                    raise RecordError("core.text", "missing")
                created = parse_iso_date(note.get("createdAt"), "createdAt")
            except RecordError as e:
                bad.append(BadRecord(files.label(name), f"#{item.index}", e.field, e.message))
                continue
            note["_used"] = False
            # the opening words, unescaped once here (40 characters of output take at most 40 named entities)
            note["_head"] = html.unescape(core["text"][: 40 * 34])[:40]
            notes.setdefault(int(created.timestamp()), []).append(note)
            held += 1
    return notes, bad


def _join_note(post: Post, notes: dict[int, list[dict]]) -> None:
    """Replace a truncated tweet's text by its note-tweet body (same second ±1, same opening words)."""
    if not notes:
        return
    prefix = html.unescape(_drop_tco(post.text).rstrip("…").strip())[:40]
    sec = int(post.created_at.timestamp())
    candidates = [note for s in (sec, sec - 1, sec + 1) for note in notes.get(s, [])[:NOTE_CANDIDATES]]
    for note in candidates[:NOTE_CANDIDATES]:
        core = note["core"]
        if not note["_used"] and note["_head"].startswith(prefix):
            note["_used"] = True
            post.text = core["text"]
            post.urls = [
                str(u.get("expandedUrl") or u.get("expanded_url"))
                for u in _dicts(core.get("urls"))
                if u.get("expandedUrl") or u.get("expanded_url")
            ]
            post.hashtags = [str(h.get("text")) for h in _dicts(core.get("hashtags")) if h.get("text")]
            post.mentions = [
                str(m.get("screenName") or m.get("screen_name"))
                for m in _dicts(core.get("mentions"))
                if m.get("screenName") or m.get("screen_name")
            ]
            return


def _drop_tco(text: str) -> str:
    """`text` without the t.co link at its end (and the blanks around it), in linear time."""
    body = text.rstrip()
    tail = body[-TCO_TAIL:]
    m = _TCO.search(tail)
    return body[: len(body) - len(tail) + m.start()].rstrip() if m else text


def _dicts(value: Any) -> list[dict]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def read_x_archive(path: Path, include_deleted: bool = False, limits: Limits = DEFAULT) -> Iterator[Post | BadRecord]:
    try:
        files = ArchiveFiles(path, limits)
    except ARCHIVE_ERRORS as e:
        yield BadRecord(str(path), "archive", None, f"unreadable zip archive ({type(e).__name__}: {str(e)[:120]})")
        return
    if files.others:
        listed = ", ".join(files.others[:5]) + (", …" if len(files.others) > 5 else "")
        where = files.root or "at the root"
        n = len(files.others)
        why = f"{n} other folder(s) with a data/ of their own are not read ({listed}); the archive is {where}"
        yield BadRecord(str(path), "archive", None, why)
    for name, why in files.refused:
        yield BadRecord(str(path), name, None, why)
    author, bad = _read_account(files)
    yield from bad
    notes, bad = _read_notes(files)
    yield from bad
    names = files.find(TWEETS) + (files.find(DELETED) if include_deleted else [])
    if not names:
        yield BadRecord(str(path), "data/tweets.js", None, "no tweets file in this archive")
    for name in names:
        label = files.label(name)
        for item in files.items(name):
            yield item if isinstance(item, BadRecord) else _convert(item, label, author, notes)
    for sec_notes in notes.values():  # long posts whose tweet is not in the archive: keep them on their own
        for note in sec_notes:
            if not note["_used"] and author:
                created: datetime = parse_iso_date(note["createdAt"])
                nid = str(note.get("noteTweetId") or int(created.timestamp()))
                yield Post(id=f"x:note-{nid}", author=author, created_at=created, text=note["core"]["text"], source="x")


def read_tweets_file(path: Path, limits: Limits = DEFAULT) -> Iterator[Post | BadRecord]:
    """A lone `tweets.js` outside its archive: each tweet needs its own `user` field for the author."""
    with open(path, "rb") as fp:
        for item in iter_json_array(fp, str(path), limits=limits):
            yield item if isinstance(item, BadRecord) else _convert(item, str(path), None, {})


def _convert(item: Item, label: str, author: str | None, notes: dict[int, list[dict]]) -> Post | BadRecord:
    try:
        tweet = _unwrap(item.value, "tweet")
        post = tweet_to_post(tweet, author)
        _join_note(post, notes)
        return post
    except RecordError as e:
        inner = item.value.get("tweet") if isinstance(item.value, dict) else None
        tid = inner.get("id_str") if isinstance(inner, dict) else None
        where = item.where + (f" (id {tid})" if isinstance(tid, str) else "")
        return BadRecord(label, where, e.field, e.message)
