"""Rich tables for `roost tokenizer train|report`, `roost tokenize` and `roost shards list`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def print_tokenizer_report(r: dict[str, Any], console: Console, limit: int = 12) -> None:
    t = Table(
        title=f"tokenizer {r['tokenizer']} (vocab {r['vocab_size']:,}; "
        f"{r['sampled_posts']:,} of {r['of_posts']:,} posts measured)",
        title_justify="left",
    )
    for col in ("language", "posts", "tokens/post", "bytes/token", "coverage", "vocab used"):
        t.add_column(col, justify="left" if col == "language" else "right")
    for i, (lang, v) in enumerate(r["languages"].items()):
        if i > limit:
            t.add_row(f"({len(r['languages']) - i} more in report.json)", "", "", "", "", "")
            break
        t.add_row(
            lang,
            f"{v['posts']:,}",
            f"{v['tokens_per_post']:.1f}",
            f"{v['bytes_per_token']:.2f}",
            f"{v['coverage']:.1%}",
            f"{v['vocab_used']:.1%}",
        )
    console.print(t)
    console.print(
        "[dim]coverage: share of tokens that are whole characters or more (not bare UTF-8 byte "
        "fragments); vocab used: share of the vocabulary that the language's posts touch[/]"
    )


def print_shards(m: dict[str, Any], console: Console, seconds: float | None = None) -> None:
    t = Table(
        title=f"shards {m['name']} ({m['dtype']}, tokenizer sha256 {m['tokenizer']['sha256'][:12]}…)",
        title_justify="left",
    )
    for col in ("split", "posts", "tokens", "tokens/post", "files"):
        t.add_column(col, justify="left" if col == "split" else "right")
    total = 0
    for split, s in m["splits"].items():
        total += s["tokens"]
        t.add_row(
            split, f"{s['docs']:,}", f"{s['tokens']:,}", f"{s['tokens'] / max(s['docs'], 1):.1f}", str(len(s["files"]))
        )
    console.print(t)
    speed = f"; {total / seconds:,.0f} tokens/s" if seconds else ""
    console.print(f"corpus snapshot {m['corpus']['snapshot_time']} ({m['corpus']['posts']:,} training posts){speed}")


def print_shard_sets(sets: list[tuple[Path, dict[str, Any] | str]], console: Console) -> None:
    t = Table(title="shard sets", title_justify="left")
    for col in ("name", "train tokens", "val tokens", "tokenizer", "built", "status"):
        t.add_column(col, justify="right" if "tokens" in col else "left")
    for path, m in sets:
        if isinstance(m, str):
            t.add_row(path.name, "", "", "", "", f"[red]{m}[/]")
            continue
        stale = m.get("stale")
        status = f"[yellow]stale: {stale['reason']} ({stale['posts']})[/]" if stale else "[green]ok[/]"
        t.add_row(
            path.name,
            f"{m['splits']['train']['tokens']:,}",
            f"{m['splits']['val']['tokens']:,}",
            Path(m["tokenizer"]["path"]).parent.name,
            m["created_at"],
            status,
        )
    console.print(t)
