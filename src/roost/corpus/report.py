"""Rich tables for `roost ingest` (one run) and `roost corpus stats` (the whole store)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _counts_table(title: str, counts: dict[str, int], total: int, limit: int = 12) -> Table:
    t = Table(title=title, title_justify="left")
    t.add_column(title.split()[-1] if " " in title else "value")
    t.add_column("posts", justify="right")
    t.add_column("share", justify="right")
    items = sorted(counts.items(), key=lambda kv: -kv[1])
    for k, v in items[:limit]:
        t.add_row(str(k), f"{v:,}", f"{v / total:.1%}" if total else "-")
    if len(items) > limit:
        rest = sum(v for _, v in items[limit:])
        t.add_row(f"({len(items) - limit} more)", f"{rest:,}", f"{rest / total:.1%}" if total else "-")
    return t


def print_ingest_report(r: dict[str, Any], console: Console) -> None:
    t = Table(title="ingest", title_justify="left")
    t.add_column("")
    t.add_column("records", justify="right")
    rows = [
        ("read", r["read"]),
        ("stored (new)", r["stored"]),
        ("  kept as training text", r["kept"]),
        ("  duplicates", r["duplicates"]),
        ("  near-duplicates", r["near_duplicates"]),
        ("  reposts", r["reposts"]),
        ("already in store", r["already"]),
        ("forgotten (not resurrected)", r["forgotten"]),
        ("hidden (visibility)", r["hidden"]),
        ("rejected", r["rejected"]),
        ("PII hits", sum(r["pii"].values())),
    ]
    for name, v in rows:
        t.add_row(name, f"{v:,}")
    console.print(t)
    if r["pii"]:
        console.print(_counts_table("PII by kind", r["pii"], sum(r["pii"].values())))
    if r["stored"]:
        console.print(_counts_table("new posts by language", r["by_lang"], r["stored"]))
        console.print(_counts_table("new posts by source", r["by_source"], r["stored"]))
    _print_rejected(r["rejected_reasons"], r["rejected"], r.get("examples", []), console)
    for line in r.get("skipped", []):
        console.print(f"[yellow]skipped[/] {line}", highlight=False, soft_wrap=True)


def _print_rejected(reasons: dict[str, int], total: int, examples: list[str], console: Console) -> None:
    if not total:
        return
    console.print(_counts_table("rejected by reason", reasons, total))
    for ex in examples:
        console.print(f"[yellow]bad record[/] {ex}", highlight=False, soft_wrap=True)


def print_stats(s: dict[str, Any], console: Console) -> None:
    t = Table(title="corpus", title_justify="left")
    t.add_column("")
    t.add_column("value", justify="right")
    for name, key in [
        ("posts", "posts"),
        ("training text (kept)", "kept"),
        ("duplicates", "duplicates"),
        ("near-duplicates", "near_duplicates"),
        ("reposts", "reposts"),
        ("replies", "replies"),
        ("posts with PII", "pii_posts"),
        ("PII hits", "pii_hits"),
        ("authors", "authors"),
        ("rejected (all runs)", "rejected"),
    ]:
        t.add_row(name, f"{s[key]:,}")
    t.add_row("first post", s["first"] or "-")
    t.add_row("last post", s["last"] or "-")
    t.add_row("forgotten", ", ".join(f"{v:,} {k}(s)" for k, v in s["tombstones"].items()) or "0")
    t.add_row("ingest runs", ", ".join(f"{v} {k}" for k, v in s["runs"].items()) or "0")
    console.print(t)
    if s["posts"]:
        console.print(_counts_table("posts by language", s["by_lang"], s["posts"]))
        console.print(_counts_table("posts by source", s["by_source"], s["posts"]))
    _print_rejected(s["rejected_reasons"], s["rejected"], [], console)
