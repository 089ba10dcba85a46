"""A small real post store (X archives of generated posts plus multilingual ones, ingested by the real importer)
and a tokenizer trained on it, shared by the data tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from roost.config import CorpusConfig, TokenizerConfig
from roost.corpus.ingest import ingest
from roost.data import tokenizer as toklib
from roost.demo.writers import Draft, synthetic_drafts, write_x_archive

T0 = datetime(2024, 3, 1, tzinfo=UTC)
WORLD = [
    ("de", "Heute regnet es in Berlin schon wieder, aber der Kaffee ist gut und die Straßenbahn kommt pünktlich."),
    ("ru", "Сегодня в Москве идёт снег, и все спешат домой после работы на метро."),
    ("el", "Σήμερα ο καιρός στην Αθήνα είναι υπέροχος και πάμε για καφέ στην παραλία."),
    ("th", "วันนี้อากาศดีมากที่กรุงเทพ ฉันไปกินข้าวกับเพื่อนที่ตลาดนัด"),
    ("ja", "今日は東京でとても良い天気です。友達と公園で散歩しました。"),
]


def make_store(root: Path, n: int = 1500, authors: int = 6) -> Path:
    drafts = synthetic_drafts(n, seed=7)
    per = -(-len(drafts) // authors)
    paths = []
    for a in range(authors):
        chunk = drafts[a * per : (a + 1) * per]
        if a == 0:  # a multilingual author with emoji, hashtags and links
            chunk = chunk + [
                Draft(
                    str(9_000_000 + i),
                    f"{t} #{lang}news @friend_{i} 🎉 https://example.org/{i}",
                    T0 + timedelta(minutes=i),
                    lang=lang,
                )
                for i, (lang, t) in enumerate(WORLD * 8)
            ]
        paths.append(write_x_archive(root / "exports" / f"user{a}", f"user{a}", str(100 + a), chunk))
    db = root / "corpus.db"
    ingest(paths, db, CorpusConfig(workers=1), show_progress=False)
    return db


@pytest.fixture(scope="session")
def store_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="session")
def tok_path(store_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tok") / "t"
    return toklib.train(store_db, out, TokenizerConfig(vocab_size=1024, min_frequency=2))
