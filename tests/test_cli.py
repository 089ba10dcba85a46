"""The CLI as a user meets it: help with examples, workspace resolution, one-line errors, the demo corpus."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from roost.workspace import Workspace
from tests.conftest import posts, run_roost


def test_help_has_an_example_per_verb() -> None:
    out = run_roost("--help").stdout
    for verb in (
        "ingest",
        "forget",
        "demo-corpus",
        "corpus",
        "tokenizer",
        "tokenize",
        "shards",
        "import",
        "export",
        "train",
        "generate",
        "serve",
        "compose",
        "reply",
    ):
        assert verb in out
    for verb in (
        ["ingest"],
        ["forget"],
        ["demo-corpus"],
        ["corpus", "stats"],
        ["tokenizer", "train"],
        ["tokenizer", "report"],
        ["tokenize"],
        ["shards", "list"],
        ["shards", "verify"],
        ["serve"],
        ["compose"],
        ["reply"],
        ["import"],
        ["export"],
        ["train"],
        ["generate"],
    ):
        assert "Example:" in run_roost(*verb, "--help").stdout


def test_workspace_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ROOST_HOME", raising=False)
    assert Workspace.resolve().root == tmp_path / "roost-home"
    monkeypatch.setenv("ROOST_HOME", str(tmp_path / "env"))
    assert Workspace.resolve().root == tmp_path / "env"
    assert Workspace.resolve(tmp_path / "flag").root == tmp_path / "flag"


def test_bad_config_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "roost.toml"
    cfg.write_text("[corpus]\nnear_dup_treshold = 0.5\n")
    proc = run_roost("--home", str(tmp_path / "h"), "--config", str(cfg), "corpus", "stats", check=False)
    assert proc.returncode == 2 and "near_dup_treshold" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_config_file_in_workspace_is_used(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    cli.home.mkdir(parents=True)
    (cli.home / "roost.toml").write_text('[corpus]\nkeep_visibility = ["public"]\n')
    from datetime import UTC, datetime

    from roost.demo.writers import Draft, write_mastodon_outbox

    t = datetime(2024, 1, 1, tzinfo=UTC)
    out = write_mastodon_outbox(
        tmp_path / "o.json",
        "https://t.example/users/a",
        [Draft("1", "public post here", t), Draft("2", "unlisted post", t, visibility="unlisted")],
    )
    cli("ingest", str(out))
    assert [r["visibility"] for r in posts(cli.home / "corpus.db").values()] == ["public"]


@pytest.mark.slow
def test_demo_corpus_then_ingest(tmp_path: Path) -> None:
    sdist = Path(sys.prefix) / "share" / "roost" / "vaderSentiment-3.3.2.tar.gz"
    home = tmp_path / "h"
    args = ["--home", str(home), "demo-corpus"] + (["--vader-sdist", str(sdist)] if sdist.exists() else [])
    out = run_roost(*args).stdout
    assert "X archives" in out
    exports = home / "exports"
    assert sum(1 for p in exports.iterdir() if p.name.startswith("x-")) == 6
    assert (exports / "x-quietharbor" / "data" / "tweets.js").read_text().startswith("window.YTD.tweets.part0 = [")
    run_roost("--home", str(home), "ingest", str(exports))
    rows = posts(home / "corpus.db")
    assert len(rows) > 18_000
    sources = {r["source"] for r in rows.values()}
    assert sources == {"x", "mastodon"}
    langs = {r["lang"] for r in rows.values()}
    assert {"en", "de", "es"} <= langs
    # the real vader tweets are in there, e.g. the first line of tweets_GroundTruth.txt
    assert any(r["text"].startswith("Somehow I was blessed with some really amazing friends") for r in rows.values())
    assert any(r["dup_of"] for r in rows.values()) and any(r["near_dup_of"] for r in rows.values())
    assert any(r["pii_hits"] for r in rows.values()) and any(r["reply_to"] for r in rows.values())
    stats = run_roost("--home", str(home), "corpus", "stats", check=True).stdout
    assert "training text" in stats
    assert os.path.getsize(home / "corpus.db") > 0


def test_demo_corpus_sample(tmp_path: Path) -> None:
    """`--posts N` keeps a seeded sample of N source texts (what `make demo` uses to stay within minutes)."""
    sdist = Path(sys.prefix) / "share" / "roost" / "vaderSentiment-3.3.2.tar.gz"
    extra = ["--vader-sdist", str(sdist)] if sdist.exists() else []
    for name in ("a", "b"):
        run_roost("--home", str(tmp_path / name), "demo-corpus", "--posts", "300", *extra)
    a, b = (sorted((tmp_path / n / "exports").rglob("*.js*")) for n in ("a", "b"))
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]  # same seed, same sample
    run_roost("--home", str(tmp_path / "a"), "ingest", str(tmp_path / "a" / "exports"))
    assert 250 <= len(posts(tmp_path / "a" / "corpus.db")) <= 300  # a few near-copies of reposts fold away
    full = tmp_path / "full"  # a smaller sample written over a bigger one leaves none of the bigger one behind
    run_roost("--home", str(full), "demo-corpus", *extra)
    run_roost("--home", str(full), "demo-corpus", "--posts", "300", *extra)
    assert sorted(p.relative_to(full) for p in (full / "exports").rglob("*.js*")) == [
        p.relative_to(tmp_path / "a") for p in a
    ]
    bad = run_roost("--home", str(tmp_path / "c"), "demo-corpus", "--posts", "0", *extra, check=False)
    assert bad.returncode == 2 and "--posts must be >= 1" in bad.stderr


def _verbs(*group: str) -> list[tuple[str, ...]]:
    """The verbs `roost [group] --help` lists (its Commands panel), as argument tuples."""
    out = run_roost(*group, "--help").stdout
    panel = out.split("Commands", 1)[1] if "Commands" in out else ""
    return [(*group, m) for m in re.findall(r"^│ ([a-z][a-z-]*) ", panel, flags=re.M)]


def test_help_keeps_bracketed_words() -> None:
    """Every bracketed word in the CLI's help texts (`[search] k`, `[store] url`) reaches the printed help: Rich
    markup swallowed them ("default  k, 10"). Style tags (`[bold]…[/]`) stay markup."""
    import ast
    from concurrent.futures import ThreadPoolExecutor

    src = Path(__file__).parents[1] / "src" / "roost" / "cli"
    words = set()
    for path in src.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):  # help= texts and the verbs' docstrings
            texts = [node.value] if isinstance(node, ast.keyword) and node.arg == "help" else []
            if isinstance(node, ast.FunctionDef) and (doc := ast.get_docstring(node)):
                texts.append(ast.Constant(doc))
            for text in texts:
                for part in ast.walk(text):
                    if isinstance(part, ast.Constant) and isinstance(part.value, str):
                        words.update(re.findall(r"\[[a-z_]+\](?= )", part.value))
    words -= {"[bold]", "[dim]", "[red]", "[yellow]", "[green]", "[cyan]", "[italic]"}
    assert {"[search]", "[store]"} <= words
    verbs = _verbs()
    for group in [v for v in verbs if "Commands" in run_roost(*v, "--help").stdout]:
        verbs += _verbs(*group)
    assert ("corpus", "stats") in verbs and ("search",) in verbs
    with ThreadPoolExecutor(4) as pool:
        printed = "\n".join(pool.map(lambda v: run_roost(*v, "--help").stdout, [(), *verbs]))
    assert not [w for w in sorted(words) if w not in printed]


def test_errors_keep_bracketed_words(tmp_path: Path) -> None:
    """An error naming a roost.toml section prints it ("[train] / flags: unknown setting"), not Rich markup's
    nothing."""
    (tmp_path / "roost.toml").write_text("[train]\nbogus_key = 1\n")
    proc = run_roost("--home", str(tmp_path), "train", "--dry-run", check=False)
    assert proc.returncode != 0 and "[train] / flags: unknown setting(s) ['bogus_key']" in proc.stderr
