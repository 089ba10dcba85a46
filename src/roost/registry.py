"""The one place backend names are compared: which store a location is, which search backend a setting names.
Everything else dispatches on the kinds returned here (roost.corpus.backend, roost.search.backend).

    store_kind(Path("home/corpus.db"))          # StoreKind.SQLITE
    store_kind("postgresql://…")                # StoreKind.POSTGRES
    search_kind("postgres", location)           # SearchKind.POSTGRES (a UsageError unless the store is PostgreSQL)

A new store backend adds a kind here and its package under `roost/corpus/`; a new search backend a kind here and
its module under `roost/search/`.
"""

from __future__ import annotations

import enum
from pathlib import Path

from roost.errors import UsageError
from roost.redact import redact

# Where a store is: the workspace's SQLite file (`Workspace.corpus_db`), or a `postgresql://` URL (`--store URL`,
# `[store] url` in roost.toml).
Location = Path | str

SERVER_SCHEMES = ("postgresql://", "postgres://")


class StoreKind(enum.Enum):
    SQLITE = "sqlite"  # one file in the home (roost.corpus.sqlite)
    POSTGRES = "postgres"  # a server shared by many writers and replicas (roost.corpus.postgres)


class SearchKind(enum.Enum):
    EMBEDDED = "embedded"  # tantivy + usearch in <home>/index (search/hybrid.py)
    POSTGRES = "postgres"  # full-text search + pgvector in the store's database (search/pgsearch.py)


def store_kind(location: Location) -> StoreKind:
    """The kind of store at `location`: a PostgreSQL URL, else the SQLite file."""
    if isinstance(location, str) and location.startswith(SERVER_SCHEMES):
        return StoreKind.POSTGRES
    return StoreKind.SQLITE


def store_location(corpus_db: Path, url: str | None, where: str = "--store") -> Location:
    """The store to use: `url` (from `where`: `--store`, `[store] url` or `$ROOST_STORE`) when given, else the
    workspace's SQLite file. Anything but a PostgreSQL URL there is a usage error naming `where` (password
    redacted)."""
    if not url:
        return corpus_db
    if store_kind(url) is not StoreKind.POSTGRES:
        raise UsageError(f"{where} {redact(url)!r}: give a postgresql:// URL (the default store is {corpus_db})")
    return url


def describe(location: Location) -> str:
    """The store as it may be written into files and messages: a path, or a URL without its password."""
    return redact(str(location)) if store_kind(location) is StoreKind.POSTGRES else str(location)


def search_kind(name: str, location: Location | None = None) -> SearchKind:
    """The search backend `[search] backend` names; the PostgreSQL one lives in the store's own database, so it
    needs the store there (`location`, when given, is checked)."""
    try:
        kind = SearchKind(name)
    except ValueError:
        names = " or ".join(k.value for k in SearchKind)
        raise UsageError(f"search.backend must be {names}, got {name!r}") from None
    if kind is SearchKind.POSTGRES and location is not None and store_kind(location) is not StoreKind.POSTGRES:
        raise UsageError("search.backend = postgres needs the post store on PostgreSQL (--store / [store] url)")
    return kind
