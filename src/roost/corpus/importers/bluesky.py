"""Bluesky importer: repository `.car` files (`com.atproto.sync.getRepo`, or the account's "export data").

`roost ingest alice.car`. Blocks are decoded with libipld (DAG-CBOR, CIDs); the repository's Merkle search tree
is walked from the signed commit to find `app.bsky.feed.post/<rkey>` records, so each post gets its real
`at://` URI. A CAR with garbage blocks still yields every decodable post: damaged blocks are reported by index
and CID, and post records no longer reachable from the tree are kept with an id derived from their CID.

Budgets (`importers/limits.py`): a file over `max_repo_bytes` is refused before it is read. The CAR is framed
here (varint-length-prefixed sections) and each block is checked before it is decoded, one at a time: one over
`max_record_bytes` is refused by its length, one of more than `max_block_items` CBOR items by a count of its item
heads (decoding makes an object of every item: an 8 MB array of empty arrays is ~600 MB of Python). A decoded
block is dropped once seen; only the commit and the file offsets of tree nodes and posts are kept, and those blocks
are decoded again when the tree is walked and the posts are made, so memory is the file plus an index. libipld's
decoder raises RecursionError past ~1000 levels (the interpreter's recursion limit; it never overflows the stack)
and such a block is rejected alone, as is a post record nested deeper than `max_depth`. The tree walk is
iterative, visits each node once (a tree that loops on itself, or shares a node, is cut there and reported),
stops after `max_tree_nodes` nodes, and refuses keys over MAX_KEY_BYTES.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import libipld

from roost.corpus.importers.limits import DEFAULT, Limits, deep_message, size, too_deep
from roost.corpus.post import BadRecord, Post, RecordError, parse_iso_date

SOURCE = "bluesky"
POST_TYPE = "app.bsky.feed.post"
_POST_KEY = (POST_TYPE + "/").encode()
MAX_KEY_BYTES = 1024  # an MST key is "collection/rkey": NSID (<= 317) + '/' + record key (<= 512)
_DECODE_ERRORS = (ValueError, TypeError, OverflowError, KeyError, IndexError)  # what libipld raises on damage


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


def _roots(header: Any) -> list[bytes]:
    roots = header.get("roots") if isinstance(header, dict) else None
    return [r for r in roots if isinstance(r, bytes)] if isinstance(roots, list) else []


# Runs of CBOR items that are one byte each: small integers, empty strings, container and tag heads with a small
# count, simple values. Bytes that start such an item, as a table.
_ONE_BYTE_ITEMS = rb"\x00-\x17\x20-\x37\x40\x60\x80-\x97\xa0-\xb7\xc0-\xd7\xe0-\xf7"
_ONE_BYTE_RUN = re.compile(b"[" + _ONE_BYTE_ITEMS + b"]+")
_ONE_BYTE = bytes(1 if re.fullmatch(b"[" + _ONE_BYTE_ITEMS + b"]", bytes([i])) else 0 for i in range(256))


def count_items(data: bytes, start: int, end: int, limit: int) -> int:
    """The CBOR data items in data[start:end], from their heads, without decoding or building anything; stops
    once past `limit`. Strings are skipped by their length and runs of one-byte items at C speed. A head that is
    not DAG-CBOR (indefinite length, reserved) ends the count: the decoder refuses the block there."""
    n, pos = 0, start
    while pos < end and n <= limit:
        head = data[pos]
        if _ONE_BYTE[head]:
            m = _ONE_BYTE_RUN.match(data, pos, end)
            run_end = m.end() if m is not None else pos + 1
            n += run_end - pos
            pos = run_end
            continue
        info = head & 0x1F
        if info < 24:
            width, arg = 0, info
        elif info <= 27:
            width = 1 << (info - 24)
            arg = int.from_bytes(data[pos + 1 : pos + 1 + width], "big")
        else:
            break
        pos += 1 + width
        if 0x40 <= head < 0x80:  # a byte or text string: its content is no item
            pos += arg
        n += 1
    return n


def _block_problem(data: bytes, start: int, end: int, limits: Limits) -> str | None:
    """Why the block data[start:end] must not be decoded (None: it may be)."""
    length = end - start
    if length > limits.max_record_bytes:
        return f"{size(length)}, over the {size(limits.max_record_bytes)} budget per record; not decoded"
    cap = limits.max_block_items
    if length > cap and count_items(data, start, end, cap) > cap:  # a block of <= cap bytes has <= cap items
        return f"more than {cap:,} CBOR items, over the budget per block (a decoding bomb?); not decoded"
    return None


def _decode_block(data: bytes) -> Any:
    """One DAG-CBOR block; ValueError with a message for damage or nesting past the decoder's guard."""
    try:
        return libipld.decode_dag_cbor(data)
    except RecursionError:
        raise ValueError(
            f"record nested too deeply (over the decoder's ~{sys.getrecursionlimit()} levels); block rejected"
        ) from None
    except _DECODE_ERRORS as e:
        raise ValueError(f"garbage block: {e}") from None


def _frame(data: bytes, pos: int) -> tuple[bytes, int, int]:
    """The block whose section starts at `pos`: (its CID, where its data starts, where it ends). ValueError or
    IndexError when the section cannot be read."""
    length, start = _varint(data, pos)
    end = start + length
    if length == 0 or end > len(data):
        raise ValueError("block length runs past the end of the file (truncated)")
    clen = _cid_len(data, start)
    if clen > length:
        raise ValueError("the block's CID runs past its section")
    return data[start : start + clen], start + clen, end


@dataclass
class Repo:
    """What one pass over a CAR keeps: its roots, the commit, and where the tree nodes and posts are (CID → the
    file offset of the block's section): the rest of every decoded block is dropped."""

    data: bytes
    roots: list[bytes] = field(default_factory=list)
    commit: Any = None
    nodes: dict[bytes, int] = field(default_factory=dict)  # blocks shaped like tree nodes (a map with an "e" list)
    posts: dict[bytes, int] = field(default_factory=dict)  # app.bsky.feed.post records
    decoded: int = 0  # blocks decoded

    def block(self, pos: int) -> tuple[bytes, Any]:
        """(CID, value) of the block at `pos`, decoded again (it passed the budgets in the first pass)."""
        cid, start, end = _frame(self.data, pos)
        return cid, _decode_block(self.data[start:end])

    def get(self, cid: bytes) -> Any:
        """A tree node by CID (None: not in the file, or not shaped like a node)."""
        pos = self.nodes.get(cid)
        if pos is None:
            return None
        try:
            return self.block(pos)[1]
        except (ValueError, IndexError):
            return None


def _scan(repo: Repo, label: str, limits: Limits) -> Iterator[BadRecord]:
    """The first pass: fill `repo`, yield each block that is refused or cannot be decoded, by index and CID."""
    data = repo.data
    try:
        hlen, pos = _varint(data, 0)
        problem = _block_problem(data, pos, min(pos + hlen, len(data)), limits)
        if problem is not None:
            raise ValueError(f"header: {problem}")
        repo.roots = _roots(_decode_block(data[pos : pos + hlen]))
        pos += hlen
    except (ValueError, IndexError) as e:
        yield BadRecord(label, "header", None, f"not a CAR file: {e}")
        return
    root = repo.roots[0] if repo.roots else None
    index = 0
    while pos < len(data):
        try:
            cid, start, end = _frame(data, pos)
        except (ValueError, IndexError) as e:
            yield BadRecord(label, f"block #{index}", None, f"unreadable block frame: {e}; rest of file skipped")
            break
        problem = _block_problem(data, start, end, limits)
        if problem is not None:
            yield BadRecord(label, f"block #{index} ({_cid_str(cid)})", None, problem)
        else:
            try:
                value = _decode_block(data[start:end])
            except ValueError as e:
                yield BadRecord(label, f"block #{index} ({_cid_str(cid)})", None, str(e))
            else:
                repo.decoded += 1
                if cid == root:
                    repo.commit = value
                if isinstance(value, dict):
                    if value.get("$type") == POST_TYPE:
                        repo.posts.setdefault(cid, pos)
                    if isinstance(value.get("e"), list):
                        repo.nodes[cid] = pos
                del value
        pos = end
        index += 1


def _cid_str(cid: bytes) -> str:
    try:
        return str(libipld.encode_cid(cid))
    except (*_DECODE_ERRORS, RecursionError):
        return cid.hex()[:16] if isinstance(cid, bytes) else "?"


@dataclass
class TreeWalk:
    """What the walk of one repository's tree found: record CID → key, and the nodes that were not walked."""

    keys: dict[bytes, str] = field(default_factory=dict)  # of post records only
    missing: list[bytes] = field(default_factory=list)  # absent, or not a tree node
    again: list[bytes] = field(default_factory=list)  # reached a second time: the tree loops or shares a node
    damaged: list[tuple[bytes, str]] = field(default_factory=list)  # node, what is wrong with its entries
    cut: bool = False  # stopped at max_tree_nodes


class _Blocks(Protocol):
    def get(self, cid: bytes, /) -> Any: ...


def _walk_mst(node_cid: bytes, blocks: _Blocks, limits: Limits = DEFAULT) -> TreeWalk:
    """Collect post record CID → key ("collection/rkey") from the Merkle search tree rooted at node_cid: iterative,
    each node at most once, at most `max_tree_nodes` nodes."""
    walk = TreeWalk()
    visited: set[bytes] = set()
    stack = [node_cid]
    while stack:
        cid = stack.pop()
        if cid in visited:
            walk.again.append(cid)
            continue
        if len(visited) >= limits.max_tree_nodes:
            walk.cut = True
            break
        visited.add(cid)
        node = blocks.get(cid)
        if not isinstance(node, dict) or not isinstance(node.get("e"), list):
            walk.missing.append(cid)
            continue
        if isinstance(node.get("l"), bytes):
            stack.append(node["l"])
        problem = _node_entries(node["e"], walk.keys, stack)
        if problem:
            walk.damaged.append((cid, problem))
    return walk


def _node_entries(entries: list, keys: dict[bytes, str], stack: list[bytes]) -> str | None:
    """Read one node's entries into keys (and its subtrees onto stack); what is wrong, if anything."""
    key = b""
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            return f"entry {i} is not a tree entry; the rest of this node is skipped"
        p, k = entry.get("p", 0), entry.get("k", b"")
        if not isinstance(p, int) or not isinstance(k, bytes) or not 0 <= p <= len(key):
            return f"entry {i} has no valid key prefix/suffix; the rest of this node is skipped"
        key = key[:p] + k
        if len(key) > MAX_KEY_BYTES:
            return f"entry {i}: key longer than {MAX_KEY_BYTES} bytes; the rest of this node is skipped"
        if isinstance(entry.get("v"), bytes) and key.startswith(_POST_KEY):  # only posts are looked up
            keys[entry["v"]] = key.decode("utf-8", errors="replace")
        if isinstance(entry.get("t"), bytes):
            stack.append(entry["t"])
    return None


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
    facets = rec.get("facets")
    for facet in facets if isinstance(facets, list) else []:
        features = facet.get("features") if isinstance(facet, dict) else None
        for feat in features if isinstance(features, list) else []:
            kind = feat.get("$type") if isinstance(feat, dict) else None
            if not isinstance(kind, str):
                continue
            if kind.endswith("#link") and isinstance(feat.get("uri"), str):
                post.urls.append(feat["uri"])
            elif kind.endswith("#tag") and isinstance(feat.get("tag"), str):
                post.hashtags.append(feat["tag"])
            elif kind.endswith("#mention") and isinstance(feat.get("did"), str):
                post.mentions.append(feat["did"])
    return post


def _tree_problems(walk: TreeWalk, label: str, limits: Limits) -> Iterator[BadRecord]:
    kept = "its posts are kept with ids derived from their CIDs"
    for cid in walk.missing:
        yield BadRecord(label, f"block {_cid_str(cid)}", None, f"tree node missing or damaged; {kept}")
    for cid, problem in walk.damaged:
        yield BadRecord(label, f"block {_cid_str(cid)}", None, f"tree node damaged: {problem}")
    for cid in dict.fromkeys(walk.again):
        yield BadRecord(
            label,
            f"block {_cid_str(cid)}",
            None,
            "tree node reached twice: the tree loops on itself (a cycle) or shares a node; walked once",
        )
    if walk.cut:
        yield BadRecord(
            label,
            "tree",
            None,
            f"more than {limits.max_tree_nodes} tree nodes (budget); the rest is not walked; {kept}",
        )


def read_bluesky(path: Path, limits: Limits = DEFAULT) -> Iterator[Post | BadRecord]:
    label = str(path)
    nbytes = path.stat().st_size
    if nbytes > limits.max_repo_bytes:
        why = f"{size(nbytes)}, over the {size(limits.max_repo_bytes)} budget for one repository; not read"
        yield BadRecord(label, "file", None, why)
        return
    repo = Repo(path.read_bytes())
    yield from _scan(repo, label, limits)
    if not repo.roots and not repo.decoded:
        return
    commit = repo.commit
    did = commit.get("did") if isinstance(commit, dict) else None
    walk = TreeWalk()
    if isinstance(commit, dict) and isinstance(commit.get("data"), bytes):
        walk = _walk_mst(commit["data"], repo, limits)
    else:
        yield BadRecord(label, "commit", "data", "no readable repository commit; post ids derive from CIDs")
    yield from _tree_problems(walk, label, limits)
    if not isinstance(did, str):
        did = "did:unknown"
    for cid, pos in repo.posts.items():
        rec = repo.block(pos)[1]
        key = walk.keys.get(cid)
        rkey = key.split("/", 1)[1] if key and key.startswith(POST_TYPE + "/") else f"cid-{_cid_str(cid)}"
        if too_deep(rec, limits.max_depth):
            yield BadRecord(label, f"{POST_TYPE}/{rkey}", None, deep_message(limits.max_depth))
            continue
        try:
            yield record_to_post(rec, did, rkey)
        except RecordError as e:
            yield BadRecord(label, f"{POST_TYPE}/{rkey}", e.field, e.message)
