"""Tombstone keys: what a tombstone keeps instead of a forgotten name or id (used by every store backend).

    keys = TombKeys(secret)               # the store's tombstone key (see below)
    keys.author("Jürgen Groß")            # == keys.author("JÜRGEN GROSS") == keys.author(NFD spelling)
    keys.post("x:123")

A tombstone records `HMAC-SHA256(key, kind ‖ 0 ‖ value)` in hex, where value is `author_key(name)` for an author
(one normalisation for every key erasure matches: roost.corpus.post.author_key) and the exact id for a post (a
Mastodon or Bluesky id names its author: `…/users/alice/statuses/1`). Re-ingest and every search backend ask "is
this id or author tombstoned?" by hashing what they hold; nothing reads a name back out of a tombstone.

Where the key lives: with the store, so every writer of the store shares it and a copied or restored store keeps
recognising what it forgot — for SQLite in `corpus.db`'s `meta` table (`tomb_secret`), for PostgreSQL, where
writers on many machines share one store, in the one-row table `store_secret` (migration 0005; no privileges for
PUBLIC). docs/security.md says what this protects and what it does not.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from roost.corpus.post import author_key

KINDS = ("post", "author")


class TombKeys:
    """Keyed hashes of tombstoned post ids and author names for one store."""

    def __init__(self, secret: bytes):
        if len(secret) < 16:
            raise ValueError("a tombstone key needs at least 16 bytes")
        self._secret = secret

    def _mac(self, kind: str, value: str) -> str:
        msg = kind.encode() + b"\x00" + value.encode("utf-8", "surrogatepass")
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()

    def post(self, post_id: str) -> str:
        return self._mac("post", post_id)

    def author(self, name: str) -> str:
        return self._mac("author", author_key(name))

    def of(self, kind: str, value: str) -> str:
        return self.author(value) if kind == "author" else self.post(value)

    def matches(self, ids: list[str], authors: list[str], found: set[tuple[str, str]]) -> tuple[set[str], set[str]]:
        """The given ids and authors whose hashes are among `found` ((kind, hash) pairs read from a store)."""
        return (
            {p for p in ids if ("post", self.post(p)) in found},
            {a for a in authors if ("author", self.author(a)) in found},
        )

    def live(self, rows: list[Any], gone: set[tuple[str, str]]) -> list[Any]:
        """Those of (id, author, …) rows neither of whose keys is among `gone` ((kind, hash) pairs). Their rows are
        deleted in the same transaction as the tombstone; this is the second lock on the door."""
        if not gone:
            return rows
        return [r for r in rows if ("post", self.post(r[0])) not in gone and ("author", self.author(r[1])) not in gone]

    def hashes(self, ids: list[str], authors: list[str]) -> list[str]:
        return sorted({self.post(p) for p in ids} | {self.author(a) for a in authors})
