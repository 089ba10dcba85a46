"""Bluesky importer: repository `.car` files (`com.atproto.sync.getRepo`, or the account's "export data").

`roost ingest alice.car`. Blocks are decoded with libipld (DAG-CBOR, CIDs); the repository's Merkle search tree
is walked from the signed commit to find `app.bsky.feed.post/<rkey>` records, so each post gets its real
`at://` URI. A CAR with garbage blocks still yields every decodable post: damaged blocks are reported by index
and CID, and post records no longer reachable from the tree are kept with an id derived from their CID.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libipld

from roost.corpus.post import BadRecord, Post, RecordError, parse_iso_date

SOURCE = "bluesky"
POST_TYPE = "app.bsky.feed.post"


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _cid_len(buf: bytes, pos: int) -> int:
    if buf[pos : pos + 2] == b"\x12\x20":  # CIDv0: a bare sha2-256 multihash
        return 34
    p = pos
    for _ in range(3):  # version, codec, multihash code
        _, p = _varint(buf, p)
    size, p = _varint(buf, p)
    return p + size - pos


def read_blocks(data: bytes, label: str) -> tuple[list[bytes], dict[bytes, Any], list[BadRecord]]:
    """(roots, blocks by CID bytes, bad blocks). Fast path: libipld.decode_car; on damage, frame by frame."""
    try:
        header, blocks = libipld.decode_car(data)
        return list(header.get("roots") or []), blocks, []
    except ValueError:
        pass
    bad: list[BadRecord] = []
    try:
        hlen, pos = _varint(data, 0)
        header = libipld.decode_dag_cbor(data[pos : pos + hlen])
        roots = list(header.get("roots") or []) if isinstance(header, dict) else []
        pos += hlen
    except (ValueError, IndexError) as e:
        return [], {}, [BadRecord(label, "header", None, f"not a CAR file: {e}")]
    blocks = {}
    index = 0
    while pos < len(data):
        try:
            size, start = _varint(data, pos)
            end = start + size
            if size == 0 or end > len(data):
                raise ValueError("block length runs past the end of the file (truncated)")
            clen = _cid_len(data, start)
            cid = data[start : start + clen]
        except (ValueError, IndexError) as e:
            bad.append(BadRecord(label, f"block #{index}", None, f"unreadable block frame: {e}; rest of file skipped"))
            break
        try:
            blocks[cid] = libipld.decode_dag_cbor(data[start + clen : end])
        except ValueError as e:
            bad.append(BadRecord(label, f"block #{index} ({_cid_str(cid)})", None, f"garbage block: {e}"))
        pos = end
        index += 1
    return roots, blocks, bad


def _cid_str(cid: bytes) -> str:
    try:
        return str(libipld.encode_cid(cid))
    except ValueError:
        return cid.hex()[:16]


def _walk_mst(node_cid: bytes, blocks: dict[bytes, Any], out: dict[bytes, str], missing: list[bytes]) -> None:
    """Collect record CID → key ("collection/rkey") from the Merkle search tree rooted at node_cid."""
    stack = [node_cid]
    while stack:
        cid = stack.pop()
        node = blocks.get(cid)
        if not isinstance(node, dict) or "e" not in node:
            missing.append(cid)
            continue
        if node.get("l"):
            stack.append(node["l"])
        key = b""
        for entry in node.get("e") or []:
            key = key[: entry.get("p", 0)] + entry.get("k", b"")
            if entry.get("v"):
                out[entry["v"]] = key.decode("utf-8", errors="replace")
            if entry.get("t"):
                stack.append(entry["t"])


def record_to_post(rec: dict, did: str, rkey: str) -> Post:
    text = rec.get("text")
    if not isinstance(text, str):
        raise RecordError("text", "missing")
    post = Post(
        id=f"{SOURCE}:at://{did}/{POST_TYPE}/{rkey}",
        author=did,
        text=text,
        source=SOURCE,
        created_at=parse_iso_date(rec.get("createdAt"), "createdAt"),
    )
    langs = rec.get("langs")
    if isinstance(langs, list) and langs and isinstance(langs[0], str):
        post.lang = langs[0]
    reply = rec.get("reply")
    if (
        isinstance(reply, dict)
        and isinstance(reply.get("parent"), dict)
        and isinstance(reply["parent"].get("uri"), str)
    ):
        post.reply_to = f"{SOURCE}:{reply['parent']['uri']}"
    embed = rec.get("embed")
    if isinstance(embed, dict):
        inner = embed.get("record")
        inner = inner.get("record", inner) if isinstance(inner, dict) else None
        if isinstance(inner, dict) and isinstance(inner.get("uri"), str):
            post.quote_of = f"{SOURCE}:{inner['uri']}"
    for facet in rec.get("facets") or []:
        for feat in facet.get("features") or [] if isinstance(facet, dict) else []:
            if not isinstance(feat, dict):
                continue
            kind = feat.get("$type", "")
            if kind.endswith("#link") and isinstance(feat.get("uri"), str):
                post.urls.append(feat["uri"])
            elif kind.endswith("#tag") and isinstance(feat.get("tag"), str):
                post.hashtags.append(feat["tag"])
            elif kind.endswith("#mention") and isinstance(feat.get("did"), str):
                post.mentions.append(feat["did"])
    return post


def read_bluesky(path: Path) -> Iterator[Post | BadRecord]:
    label = str(path)
    roots, blocks, bad = read_blocks(path.read_bytes(), label)
    yield from bad
    if not roots and not blocks:
        return
    commit = blocks.get(roots[0]) if roots else None
    did = commit.get("did") if isinstance(commit, dict) else None
    keys: dict[bytes, str] = {}
    missing: list[bytes] = []
    if isinstance(commit, dict) and commit.get("data"):
        _walk_mst(commit["data"], blocks, keys, missing)
    else:
        yield BadRecord(label, "commit", "data", "no readable repository commit; post ids derive from CIDs")
    for cid in missing:
        yield BadRecord(
            label,
            f"block {_cid_str(cid)}",
            None,
            "tree node missing or damaged; its posts are kept with ids derived from their CIDs",
        )
    if not isinstance(did, str):
        did = "did:unknown"
    for cid, rec in blocks.items():
        if not isinstance(rec, dict) or rec.get("$type") != POST_TYPE:
            continue
        key = keys.get(cid)
        rkey = key.split("/", 1)[1] if key and key.startswith(POST_TYPE + "/") else f"cid-{_cid_str(cid)}"
        try:
            yield record_to_post(rec, did, rkey)
        except RecordError as e:
            yield BadRecord(label, f"{POST_TYPE}/{rkey}", e.field, e.message)
