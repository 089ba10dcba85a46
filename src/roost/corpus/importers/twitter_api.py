"""Twitter/X API importer: v2 responses (`data` + `includes`, one JSON page or JSONL of pages) and v1.1 status
objects (`full_text`, `extended_tweet`, `retweeted_status`; a JSON array, JSONL, or `{"statuses": [...]}`).

`roost ingest search-results.jsonl --format twitter-api`; the format is auto-detected from the first record.
Records are read within the budgets of `importers/limits.py` (a single-object file counts as one record).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from roost.corpus.importers.jsonstream import Item, iter_json_array, iter_jsonl
from roost.corpus.importers.limits import DEFAULT, Limits, deep_message, size, too_deep
from roost.corpus.importers.x_archive import tweet_to_post
from roost.corpus.post import BadRecord, Post, RecordError, parse_iso_date

SOURCE = "twitter-api"


def _where(item: Item, sub: int | None = None, tid: object = None) -> str:
    base = item.where
    if sub is not None:
        base += f" data[{sub}]"
    if isinstance(tid, (str, int)):
        base += f" (id {tid})"
    return base


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def v2_to_post(t: dict, users: dict[str, str]) -> Post:
    if not isinstance(t, dict):
        raise RecordError(None, f"expected a tweet object, got {type(t).__name__}")
    tid = t.get("id")
    if not isinstance(tid, str) or not (tid.isascii() and tid.isdigit()):
        raise RecordError("id", "missing or not a numeric id")
    author_id = t.get("author_id")
    author = users.get(author_id) if isinstance(author_id, str) else None
    if author is None:
        if not isinstance(author_id, str):
            raise RecordError("author_id", "missing")
        author = f"id:{author_id}"  # no includes.users expansion in this response
    note = t.get("note_tweet")
    text = note.get("text") if isinstance(note, dict) and note.get("text") else t.get("text")
    if not isinstance(text, str):
        raise RecordError("text", "missing")
    post = Post(
        id=f"x:{tid}",
        author=author,
        created_at=parse_iso_date(t.get("created_at")),
        text=text,
        source=SOURCE,
        lang=t.get("lang") if isinstance(t.get("lang"), str) else None,
    )
    entities = (note.get("entities") if isinstance(note, dict) else None) or t.get("entities") or {}
    if isinstance(entities, dict):
        for u in _list(entities.get("urls")):
            if isinstance(u, dict) and isinstance(u.get("expanded_url"), str):
                if isinstance(u.get("url"), str):
                    post.text = post.text.replace(u["url"], u["expanded_url"])
                post.urls.append(u["expanded_url"])
        post.hashtags = [
            h["tag"] for h in _list(entities.get("hashtags")) if isinstance(h, dict) and isinstance(h.get("tag"), str)
        ]
        post.mentions = [
            m["username"]
            for m in _list(entities.get("mentions"))
            if isinstance(m, dict) and isinstance(m.get("username"), str)
        ]
    for ref in _list(t.get("referenced_tweets")):
        if not isinstance(ref, dict) or not isinstance(ref.get("id"), str):
            raise RecordError("referenced_tweets", "entry without an id")
        kind = ref.get("type")
        if kind == "replied_to":
            post.reply_to = f"x:{ref['id']}"
        elif kind == "quoted":
            post.quote_of = f"x:{ref['id']}"
        elif kind == "retweeted":
            post.repost_of = f"x:{ref['id']}"
    return post


def _page_posts(item: Item, label: str) -> Iterator[Post | BadRecord]:
    page = item.value
    if not isinstance(page, dict):
        yield BadRecord(label, _where(item), None, f"expected an object, got {type(page).__name__}")
        return
    if "data" in page:  # v2 page
        includes: dict[str, Any] = page["includes"] if isinstance(page.get("includes"), dict) else {}
        users = {
            u["id"]: u["username"]
            for u in _list(includes.get("users"))
            if isinstance(u, dict) and isinstance(u.get("id"), str) and isinstance(u.get("username"), str)
        }
        data = page["data"]
        tweets = data if isinstance(data, list) else [data]
        for i, t in enumerate(tweets):
            try:
                yield v2_to_post(t, users)
            except RecordError as e:
                yield BadRecord(
                    label, _where(item, i, t.get("id") if isinstance(t, dict) else None), e.field, e.message
                )
        return
    if "statuses" in page and isinstance(page["statuses"], list):  # v1.1 search response
        for i, t in enumerate(page["statuses"]):
            try:
                yield tweet_to_post(t, None, SOURCE)
            except RecordError as e:
                yield BadRecord(label, _where(item, i), e.field, e.message)
        return
    try:
        yield tweet_to_post(page, None, SOURCE)
    except RecordError as e:
        yield BadRecord(label, _where(item, None, page.get("id_str")), e.field, e.message)


def read_twitter_api(path: Path, jsonl: bool, limits: Limits = DEFAULT) -> Iterator[Post | BadRecord]:
    label = str(path)
    with open(path, "rb") as fp:
        if jsonl:
            items: Iterator[Item | BadRecord] = iter_jsonl(fp, label, limits)
        else:
            head = fp.read(1 << 12).lstrip()
            fp.seek(0)
            if head.startswith(b"{"):  # a single page / object: parsed whole, within the record budget
                items = _read_single_object(fp, label, limits)
            else:
                items = iter_json_array(fp, label, limits=limits)
        for item in items:
            if isinstance(item, BadRecord):
                yield item
            else:
                yield from _page_posts(item, label)


def _read_single_object(fp: Any, label: str, limits: Limits = DEFAULT) -> Iterator[Item | BadRecord]:
    """A file holding one JSON object (possibly pretty-printed over many lines)."""
    import json

    data = fp.read(limits.max_record_bytes + 1)
    if len(data) > limits.max_record_bytes:
        yield BadRecord(label, "#0", None, f"object larger than {size(limits.max_record_bytes)} (budget); not read")
        return
    raw = data.decode("utf-8", errors="surrogateescape")
    deep = deep_message(limits.max_depth)
    try:
        value = json.loads(raw, strict=False)
    except json.JSONDecodeError as e:
        yield BadRecord(label, "#0", None, f"invalid JSON: {e.msg} (line {e.lineno}, column {e.colno})")
        return
    except RecursionError:
        yield BadRecord(label, "#0", None, deep)
        return
    except ValueError as e:  # e.g. an integer over Python's 4300-digit limit
        yield BadRecord(label, "#0", None, str(e)[:200])
        return
    if too_deep(value, limits.max_depth):
        yield BadRecord(label, "#0", None, deep)
        return
    yield Item(0, value, "#0")
