"""A workspace with a real store, a trained tokenizer and shards, copied per test (training writes into it)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from roost.config import ShardConfig
from roost.data import shards as shardlib
from tests.data.conftest import store_db, tok_path  # noqa: F401


@pytest.fixture(scope="session")
def base_home(store_db: Path, tok_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    home = tmp_path_factory.mktemp("train-home")
    shutil.copyfile(store_db, home / "corpus.db")
    shutil.copytree(tok_path.parent, home / "tokenizers" / "default")
    shardlib.build(
        home / "corpus.db",
        home / "tokenizers/default/tokenizer.json",
        home / "shards/default",
        ShardConfig(val_fraction=0.05),
    )
    return home


@pytest.fixture
def home(base_home: Path, tmp_path: Path) -> Path:
    h = tmp_path / "home"
    shutil.copytree(base_home, h)
    return h
