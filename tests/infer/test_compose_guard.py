"""Compose building blocks: the character limit by construction, near-duplicate measure, and the leak guard
(including forgotten posts and newly ingested ones)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from roost.corpus.sqlite import Store
from roost.infer.compose import fit, jaccard
from roost.infer.guard import LeakGuard

words = st.lists(st.text(st.characters(categories=["L", "N", "P", "So"]), min_size=1, max_size=15), max_size=80)


@settings(max_examples=300, deadline=None)
@given(words, st.integers(20, 300))
def test_fit_is_within_limit_and_never_cuts_a_word(ws: list[str], limit: int) -> None:
    text = " ".join(ws)
    out = fit(text, limit)
    norm = " ".join(text.split())
    if out is None:
        assert not norm or all(len(w) > limit for w in norm.split()[:1])
        return
    assert len(out) <= limit and norm.startswith(out)
    rest = norm[len(out) :]
    # the cut is at a word end (possibly after dropping trailing , ; : dashes) or right after a sentence end
    assert rest == "" or rest[0] == " " or rest.lstrip(",;:-–—")[:1] in ("", " ") or out[-1] in ".!?…\"')]"


def test_jaccard() -> None:
    a = "the quick brown fox jumps over the lazy dog"
    assert jaccard(a, a) == 1.0 and jaccard(a, a.upper()) == 1.0
    assert jaccard(a, "completely different words about gardening") < 0.1


def test_leak_guard(store_db: Path, tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    shutil.copyfile(store_db, db)
    con = sqlite3.connect(db)
    pid, text = con.execute("SELECT id, text FROM posts WHERE length(text) > 90 LIMIT 1").fetchone()
    con.close()
    g = LeakGuard(db)
    chunk = text[7:67]  # 60 characters from inside the post
    assert g.check(f"My new post: {chunk} — what do you think?") == pid
    assert g.check(f"My new post: {text[7:55]} — what do you think?") is None  # 48 characters: not a leak
    assert g.check("nothing like anything in the corpus at all, really, truly, nothing whatsoever") is None
    with Store(db) as store:
        store.forget([], [pid])
    assert g.check(f"My new post: {chunk} — what do you think?") is None  # forgotten: never a match
    con = sqlite3.connect(db)
    cols = [r[1] for r in con.execute("PRAGMA table_info(posts)")]
    row = dict(zip(cols, con.execute("SELECT * FROM posts LIMIT 1").fetchone(), strict=True))
    fresh = "A brand new post that was ingested while the server was running, long enough to matter here."
    row.update(id="x:fresh", text=fresh, text_scrubbed=fresh)
    row.pop("seq")  # the store numbers rows itself
    con.execute(f"INSERT INTO posts ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values()))
    con.commit()
    con.close()
    assert g.refresh() == 1
    assert g.check(fresh[:70]) == "x:fresh"
    g.close()
