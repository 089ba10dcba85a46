"""`roost eval search`: trec_eval's measures against the textbook formulas, the known-item set (held-out split,
cache, tuning), and a BEIR-format folder end to end through the CLI."""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
from pathlib import Path

import pytest

from roost.context import Roost
from roost.search import eval as ev
from roost.search.embedded import SearchIndex
from tests.conftest import run_roost
from tests.search.conftest import copy_home
from tests.serve.conftest import model_dir  # noqa: F401


def test_measures_match_the_formulas() -> None:
    es = ev.EvalSet("t", {"a": "", "b": ""}, {"a": {"d1": 1, "d9": 1}, "b": {"d5": 2}})
    run = {"a": {"d3": 3.0, "d1": 2.0, "d2": 1.0}, "b": {f"d{i}": 10.0 - i for i in range(1, 8)}}
    got = ev.score(es, run, ["a", "b"])
    # a: d1 at rank 2 of 2 relevant; b: d5 at rank 5. trec_eval's nDCG gain is the judged level (linear).
    ndcg_a = (1 / math.log2(3)) / (1 / math.log2(2) + 1 / math.log2(3))
    ndcg_b = (2 / math.log2(6)) / (2 / math.log2(2))
    assert got["nDCG@10"] == pytest.approx((ndcg_a + ndcg_b) / 2)
    assert got["MRR"] == pytest.approx((1 / 2 + 1 / 5) / 2)
    assert got["recall@10"] == pytest.approx((1 / 2 + 1) / 2)


def _words(posts: list[str]) -> list[str]:
    """A query writer that needs no model: three longer words of the post, in reverse order."""
    out = []
    for p in posts:
        ws = [w.strip(".,!?#@") for w in p.split() if len(w.strip(".,!?#@")) > 4 and "/" not in w]
        out.append(" ".join(ws[:3][::-1]))
    return out


def test_known_item_set_split_cache_and_tune(search_home: Path, tmp_path: Path) -> None:
    home = copy_home(search_home, tmp_path / "h")
    con = sqlite3.connect(home / "corpus.db")
    con.execute("UPDATE posts SET lang = 'en' WHERE lang = 'und'")  # the synthetic posts are word salad
    con.commit()
    con.close()
    es = ev.known_item_set(Roost.at(home), _words, 40)
    assert len(es.queries) == 40 and 0 < len(es.tune) < 40
    assert not set(es.test) & es.tune  # tuning never sees a scored query
    again = ev.known_item_set(Roost.at(home), lambda posts: pytest.fail("the cached set is reused"), 40)
    assert again.queries == es.queries and again.tune == es.tune and again.qrels == es.qrels
    idx = SearchIndex(Roost.at(home))
    run = ev.run_mode(idx, es, es.test, "keyword")
    ranks = []
    for q in es.test:
        (want,) = es.qrels[q]
        order = sorted(run[q], key=lambda d: -run[q][d])
        ranks.append(1 / (order.index(want) + 1) if want in order else 0.0)
    assert ev.score(es, run, es.test)["MRR"] == pytest.approx(sum(ranks) / len(ranks))
    assert sum(ranks) / len(ranks) > 0.5  # the words are in the post: keyword search finds most
    tuned = ev.tune_weights(idx, es)
    assert tuned["tune_queries"] == len(es.tune) and tuned["keyword"] in (0.25, 0.5, 1.0, 1.5, 2.0)
    assert tuned["tune_ndcg10"] >= tuned["default_ndcg10"]  # 1:1 is in the grid
    assert tuned["keep"] == (tuned["keyword"] != 1.0 and tuned["tune_ndcg10"] >= 1.02 * tuned["default_ndcg10"])


def _beir(tmp: Path, store: Path, n: int = 300) -> Path:
    d = tmp / "mini-beir"
    (d / "qrels").mkdir(parents=True)
    con = sqlite3.connect(store)
    rows = con.execute("SELECT id, text FROM posts WHERE repost_of IS NULL ORDER BY rowid LIMIT ?", (n,)).fetchall()
    con.close()
    with open(d / "corpus.jsonl", "w") as f:
        for pid, text in rows:
            f.write(json.dumps({"_id": pid.replace(":", "_"), "title": "", "text": text}) + "\n")
    picks = rows[::15]
    with open(d / "queries.jsonl", "w") as f:
        for i, q in enumerate(_words([t for _, t in picks])):
            f.write(json.dumps({"_id": f"q{i}", "text": q}) + "\n")
    with open(d / "qrels" / "test.tsv", "w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for i, (pid, _) in enumerate(picks):
            f.write(f"q{i}\t{pid.replace(':', '_')}\t1\n")
    return d


def test_beir_cli(search_home: Path, tmp_path: Path) -> None:
    d = _beir(tmp_path, search_home / "corpus.db")
    png = tmp_path / "chart.png"
    out = run_roost("--home", str(tmp_path / "empty"), "eval", "search", "--beir", str(d), "--plot", str(png), "--json")
    res = json.loads(out.stdout)
    assert set(res["results"]) == {"keyword", "semantic", "hybrid"} and res["queries"] == 20
    assert all(0 <= v <= 1 for r in res["results"].values() for v in r.values())
    assert res["results"]["keyword"]["recall@100"] > 0.5
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (d / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq0 only-two-columns\n")
    bad = run_roost("--home", str(tmp_path / "empty"), "eval", "search", "--beir", str(d), check=False)
    assert bad.returncode != 0 and "test.tsv: line 2" in bad.stderr and "Traceback" not in bad.stderr


def test_eval_cli_with_a_model(search_home: Path, model_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    """The whole command with a (tiny, random) model writing the queries: table, tuning stored, chart."""
    home = copy_home(search_home, tmp_path / "h")
    shutil.copytree(model_dir, home / "models" / "tiny")
    con = sqlite3.connect(home / "corpus.db")
    con.execute("UPDATE posts SET lang = 'en'")
    con.commit()
    con.close()
    out = run_roost("--home", str(home), "eval", "search", "-m", "tiny", "--queries", "16", "--tune", "--expand")
    assert "hybrid + LLM expansion" in out.stdout and "nDCG@10" in out.stdout
    meta = json.loads((home / "index" / "meta.json").read_text())
    assert "fusion tuning on the tune half" in out.stdout
    if "stored in index/meta.json" in out.stdout:  # only a real gain on the tune half is kept
        assert set(meta["fusion"]) == {"keyword", "semantic"}
    else:
        assert "not kept" in out.stdout and "fusion" not in meta
    assert (home / "index" / "eval" / "search-eval.png").is_file()
    assert (home / "index" / "eval" / "known-item" / "qrels" / "test.tsv").is_file()
