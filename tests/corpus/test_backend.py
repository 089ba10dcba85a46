"""Every store implementation provides the whole backend-neutral interface (`roost.corpus.backend`) with the same
parameters, and nothing outside `corpus/` opens a store except through `open_store`/`open_reader`."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from roost.corpus import backend
from roost.corpus.postgres import PgReader, PgStore
from roost.corpus.sqlite import Store, StoreReader

SRC = Path(backend.__file__).resolve().parents[1]


def _methods(proto: type) -> dict[str, inspect.Signature]:
    names = [n for n in proto.__dict__ if not n.startswith("_") or n in ("__enter__", "__exit__")]
    return {n: inspect.signature(getattr(proto, n)) for n in names if callable(getattr(proto, n))}


@pytest.mark.parametrize(
    ("proto", "impl"),
    [
        (backend.PostStore, Store),
        (backend.PostReader, StoreReader),
        (backend.PostStore, PgStore),
        (backend.PostReader, PgReader),
    ],
)
def test_implementation_has_every_protocol_method(proto: type, impl: type) -> None:
    want = _methods(proto)
    assert len(want) > 10
    for name, sig in want.items():
        assert hasattr(impl, name), f"{impl.__name__} lacks {name}"
        got = inspect.signature(getattr(impl, name))
        assert list(got.parameters) == list(sig.parameters), (name, got, sig)


def test_no_stage_opens_the_store_by_class() -> None:
    offenders = []
    for p in SRC.rglob("*.py"):
        backend_package = p.parent.parent.name == "corpus" and p.parent.name in ("sqlite", "postgres")
        if backend_package or (p.parent.name == "corpus" and p.name == "backend.py"):
            continue
        text = p.read_text()
        if re.search(r"\b(StoreReader|Store)\(", text) or "import sqlite3" in text:
            offenders.append(str(p.relative_to(SRC)))
    assert offenders == []
