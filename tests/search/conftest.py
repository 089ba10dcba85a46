"""A searchable workspace: the shared test store (real X-archive ingest) with both indexes built once; tests copy
it before changing it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from roost.context import Roost
from roost.search.embedded import SearchIndex
from tests.data.conftest import store_db, tok_path  # noqa: F401


@pytest.fixture(scope="session")
def search_home(store_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    h = tmp_path_factory.mktemp("search-home")
    shutil.copyfile(store_db, h / "corpus.db")
    SearchIndex.build(Roost.at(h))
    return h


def copy_home(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
