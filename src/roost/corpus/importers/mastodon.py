"""Mastodon importer: `outbox.json` (ActivityPub OrderedCollection) from a Mastodon account archive — the file,
the unpacked folder, or the archive `.tar.gz` itself.

`roost ingest archive-20240101-abc.tar.gz`. `Create` of a `Note` becomes a post (HTML → plain text, hashtags and
mentions from `tag`, `inReplyTo`); `Announce` becomes a repost. Visibility comes from `to`/`cc`: public,
unlisted, followers or direct; `roost ingest` keeps public and unlisted unless `--include-private`.

An archive is read as a stream, member by member, until the first regular `outbox.json` (Mastodon writes it
first): at most `max_members` members and `max_member_bytes` skipped before it. The outbox member is read within
the member budgets (`importers/limits.py`): its declared size against the whole archive's compressed size before
reading, then its decompressed bytes against the compressed bytes consumed while reading, so a bomb stops at the
budget with the records before it kept. Status HTML with stray '<' is escaped first: the stdlib HTML parser is
quadratic on unclosed tags.
"""

from __future__ import annotations

import io
import re
import tarfile
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

from roost.corpus.importers.jsonstream import CHUNK, Item, iter_json_array
from roost.corpus.importers.limits import (
    ARCHIVE_ERRORS,
    DEFAULT,
    LimitedReader,
    Limits,
    StreamError,
    member_verdict,
    size,
)
from roost.corpus.importers.paths import refusal
from roost.corpus.post import BadRecord, Post, RecordError, parse_iso_date

SOURCE = "mastodon"
PUBLIC = {"https://www.w3.org/ns/activitystreams#Public", "as:Public", "Public"}
_STRAY_LT = re.compile(r"<(?=[^<>]*(?:<|$))")  # a '<' that no '>' closes before the next '<' (linear to find)


class _Text(HTMLParser):
    """Mastodon's status HTML → plain text (paragraphs → blank line, <br> → newline, links → their text)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag == "br":
            self.parts.append("\n")
        elif tag == "p" and self.parts:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def html_to_text(content: str) -> str:
    parser = _Text()
    parser.feed(_STRAY_LT.sub("&lt;", content))
    parser.close()
    return "".join(parser.parts)


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        ids = [v if isinstance(v, str) else v.get("id") for v in value if isinstance(v, (str, dict))]
        return [v for v in ids if isinstance(v, str)]
    return []


def visibility(to: Any, cc: Any) -> str:
    to_l, cc_l = _as_list(to), _as_list(cc)
    if any(v in PUBLIC for v in to_l):
        return "public"
    if any(v in PUBLIC for v in cc_l):
        return "unlisted"
    if any(v.endswith("/followers") for v in to_l + cc_l):
        return "followers"
    return "direct"


def actor_handle(actor: Any) -> str:
    """`https://mastodon.social/users/alice` → `alice@mastodon.social`."""
    if isinstance(actor, dict):
        actor = actor.get("id")
    if not isinstance(actor, str) or not actor:
        raise RecordError("actor", "missing")
    try:
        u = urlparse(actor)
    except ValueError as e:  # e.g. "Invalid IPv6 URL"
        raise RecordError("actor", f"not a URL: {e}") from None
    parts = [p for p in u.path.split("/") if p]
    if u.netloc and len(parts) >= 2 and parts[0] in ("users", "u", "accounts"):
        return f"{parts[1]}@{u.netloc}"
    if u.netloc and len(parts) == 1 and parts[0].startswith("@"):
        return f"{parts[0][1:]}@{u.netloc}"
    return actor


def activity_to_post(act: Any) -> Post | None:
    """One outbox item → Post (None for activity types that are not posts, e.g. Like)."""
    if not isinstance(act, dict):
        raise RecordError(None, f"expected an activity object, got {type(act).__name__}")
    kind = act.get("type")
    if kind == "Announce":
        obj = act.get("object")
        target = obj.get("id") if isinstance(obj, dict) else obj
        if not isinstance(target, str) or not target:
            raise RecordError("object", "Announce without the announced post")
        aid = act.get("id")
        if not isinstance(aid, str) or not aid:
            raise RecordError("id", "missing")
        return Post(
            id=f"{SOURCE}:{aid}",
            author=actor_handle(act.get("actor")),
            created_at=parse_iso_date(act.get("published"), "published"),
            text="",
            source=SOURCE,
            repost_of=f"{SOURCE}:{target}",
            visibility=visibility(act.get("to"), act.get("cc")),
        )
    if kind != "Create":
        return None
    obj = act.get("object")
    if not isinstance(obj, dict):
        raise RecordError("object", "Create without an object")
    if obj.get("type") not in ("Note", "Question", "Article"):
        return None
    oid = obj.get("id")
    if not isinstance(oid, str) or not oid:
        raise RecordError("object.id", "missing")
    content = obj.get("content")
    if content is None and isinstance(obj.get("contentMap"), dict) and obj["contentMap"]:
        content = next(iter(obj["contentMap"].values()))
    if not isinstance(content, str):
        raise RecordError("object.content", "missing" if content is None else "expected an HTML string")
    lang = (
        next(iter(obj["contentMap"]), None) if isinstance(obj.get("contentMap"), dict) and obj["contentMap"] else None
    )
    post = Post(
        id=f"{SOURCE}:{oid}",
        author=actor_handle(act.get("actor") or obj.get("attributedTo")),
        created_at=parse_iso_date(obj.get("published") or act.get("published"), "object.published"),
        text=html_to_text(content),
        source=SOURCE,
        lang=lang,
        visibility=visibility(obj.get("to", act.get("to")), obj.get("cc", act.get("cc"))),
    )
    reply = obj.get("inReplyTo")
    post.reply_to = f"{SOURCE}:{reply}" if isinstance(reply, str) and reply else None
    quote = obj.get("quoteUri") or obj.get("_misskey_quote") or obj.get("quoteUrl")
    post.quote_of = f"{SOURCE}:{quote}" if isinstance(quote, str) and quote else None
    tags = obj.get("tag")
    for tag in tags if isinstance(tags, list) else [tags]:
        if not isinstance(tag, dict) or not isinstance(tag.get("name"), str):
            continue
        if tag.get("type") == "Hashtag":
            post.hashtags.append(tag["name"].lstrip("#"))
        elif tag.get("type") == "Mention":
            post.mentions.append(tag["name"].lstrip("@"))
    return post


def _find_member(tar: tarfile.TarFile, raw: IO[bytes], limits: Limits) -> tarfile.TarInfo:
    """The first regular outbox.json, reading members as a stream within the budgets (RecordError otherwise)."""
    named: tarfile.TarInfo | None = None
    for _ in range(limits.max_members):
        info = tar.next()
        if info is None:
            break
        if info.name.rsplit("/", 1)[-1] == "outbox.json":
            if info.isfile():
                return info
            named = named or info
        if tar.offset > limits.max_member_bytes:  # tar.offset: where the next member starts (decompressed)
            raise RecordError(
                None,
                f"no outbox.json in the first {size(limits.max_member_bytes)} of this archive "
                f"(budget; member {info.name[:80]!r} is {size(info.size)})",
            )
        unpacked = tar.fileobj.tell() if tar.fileobj is not None else 0  # decompressed so far
        if unpacked > limits.ratio_floor_bytes and unpacked > limits.max_ratio * max(raw.tell(), 1):
            raise RecordError(None, f"archive expands more than {limits.max_ratio:g}:1 before outbox.json (a bomb?)")
    else:
        raise RecordError(None, f"no outbox.json among the first {limits.max_members} members (budget)")
    if named is not None:  # a symlink, hard link, device or folder: never followed
        kind = "symlink" if named.issym() else "hard link" if named.islnk() else "not a regular file"
        raise RecordError(None, f"outbox.json in this archive is a {kind}; only a regular file is read")
    raise RecordError(None, "no outbox.json in this archive")


def _open_tar(path: Path, limits: Limits) -> tuple[IO[bytes], str, Any]:
    raw = open(path, "rb")
    try:
        tar = tarfile.open(fileobj=raw, mode="r:*")
        try:
            member = _find_member(tar, raw, limits)
            verdict = member_verdict(member.size, path.stat().st_size, limits)
            if verdict is not None:
                raise RecordError(None, f"{member.name}: {verdict}")
            stream = tar.extractfile(member)
            if stream is None:
                raise RecordError(None, "outbox.json in this archive cannot be read as a file")
        except BaseException:
            tar.close()
            raise
    except BaseException:
        raw.close()
        raise
    start = raw.tell()
    reader = LimitedReader(stream, limits, lambda: raw.tell() - start)
    return io.BufferedReader(reader, CHUNK), f"{path}!{member.name}", _Closer(tar, raw)


class _Closer:
    def __init__(self, *things: Any):
        self.things = things

    def __enter__(self) -> _Closer:
        return self

    def __exit__(self, *exc: object) -> None:
        for thing in self.things:
            thing.close()


def find_outbox(path: Path, limits: Limits = DEFAULT) -> tuple[IO[bytes], str, Any]:
    """Open outbox.json from a file, folder or .tar.gz archive: (stream, label, thing to close)."""
    if path.is_dir():
        p = path / "outbox.json"
        why = refusal(p)
        if why is not None:
            raise RecordError(None, f"{p.name}: {why}")
        fp = open(p, "rb")
        return fp, str(p), fp
    if tarfile.is_tarfile(path):
        return _open_tar(path, limits)
    fp = open(path, "rb")
    return fp, str(path), fp


def read_mastodon(path: Path, limits: Limits = DEFAULT) -> Iterator[Post | BadRecord]:
    try:
        fp, label, closer = find_outbox(path, limits)
    except RecordError as e:
        yield BadRecord(str(path), "outbox.json", None, e.message)
        return
    except (*ARCHIVE_ERRORS, StreamError) as e:
        yield BadRecord(str(path), "outbox.json", None, f"unreadable archive: {type(e).__name__}: {str(e)[:160]}")
        return
    with closer:
        for item in iter_json_array(fp, label, key="orderedItems", limits=limits):
            if isinstance(item, BadRecord):
                yield item
                continue
            yield from _convert(item, label)


def _convert(item: Item, label: str) -> Iterator[Post | BadRecord]:
    try:
        post = activity_to_post(item.value)
    except RecordError as e:
        aid = item.value.get("id") if isinstance(item.value, dict) else None
        yield BadRecord(label, item.where + (f" (id {aid})" if isinstance(aid, str) else ""), e.field, e.message)
        return
    if post is not None:
        yield post
