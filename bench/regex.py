"""Regex budget: the PII and normaliser patterns on their worst known inputs, before and after the linear rewrite.

`python -m bench.regex [--runs 3]`  (results go in docs/benchmarks.md)
For each pattern family, a short adversarial unit tiled to 20k and 100k characters, timed three ways: the pattern
as it was before (a frozen copy below, the peer), the pattern roost has now (every match found with finditer), and
the roost call that runs it (`scrub(text, mentions=True)`, `normalise`, `extract_*`), which must stay within
50 ms at 20k characters. Best of --runs (one run when a call takes over a second).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import time
from collections.abc import Callable

from rich.console import Console
from rich.table import Table

from roost.corpus import clean

# The patterns as they were before the rewrite (roost 0.1.0 at commit 71cd05c), verbatim: the 'before' peer.
BEFORE: dict[str, re.Pattern[str]] = {
    "pii._EMAIL_RE": re.compile(
        r"(?<![\w.+@-])[\w.+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}\b"
    ),
    "pii._CARD_RE": re.compile(r"(?<![\w.-])\d+(?:[ -]\d+){0,8}(?![\w-])"),
    "pii._IPV4_RE": re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.]*\d)"),
    "pii._IPV6_RE": re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])"),
    "pii._PHONE_RE": re.compile(
        r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){1,6}(?!\w)"
        r"|(?<![\w(])\(?\d{3}\)?[ .-]?\d{3}[ .-]\d{4}(?![\w-])"
        r"|(?<!\w)0\d{2,4}[ /-]\d{3,4}[ -]?\d{3,4}(?![\w-])"
    ),
    "pii._MENTION_RE": re.compile(r"(?<![\w@/<])@(?!<USER>)\w{1,30}(?:@[\w.-]+\.\w+)?"),
    "clean._SPACE_NL": re.compile(r" *\n *"),
    "clean.HASHTAG_RE": re.compile(r"(?<![\w#&/])#(\w*[^\W\d_]\w*)"),
    "clean.MENTION_RE": re.compile(r"(?<![\w@/])@(\w{1,30}(?:@[\w.-]+\.\w+)?)"),
    "clean.URL_RE": re.compile(r"https?://[^\s<>\"'`]+[^\s<>\"'`.,;:!?)\]}]"),
}

# (family, pattern, unit tiled to the length after an optional head, the roost call that runs the pattern)
Case = tuple[str, str, str | tuple[str, str], str]
CASES: list[Case] = [
    ("phone", "pii._PHONE_RE", " +1111111111111111111x", "scrub"),
    ("phone", "pii._PHONE_RE", "(+1111111111111111111x", "scrub"),
    ("card", "pii._CARD_RE", "0:", "scrub"),
    ("card", "pii._CARD_RE", "9 4", "scrub"),
    ("e-mail", "pii._EMAIL_RE", " a@1.", "scrub"),
    ("IPv4", "pii._IPV4_RE", " 1.1.1.1a", "scrub"),
    ("IPv6", "pii._IPV6_RE", " ::", "scrub"),
    ("mention", "pii._MENTION_RE", " @a", "scrub"),
    ("spaces at newlines", "clean._SPACE_NL", " ", "normalise"),
    ("hashtag", "clean.HASHTAG_RE", (" #", "1"), "extract_hashtags"),
    ("hashtag", "clean.HASHTAG_RE", " #1", "extract_hashtags"),
    ("mention", "clean.MENTION_RE", " @a@b.", "extract_mentions"),
    ("URL", "clean.URL_RE", (" http://a", "."), "extract_urls"),
]
CALLS: dict[str, Callable[[str], object]] = {
    "scrub": lambda t: clean.scrub(t, mentions=True),
    "normalise": clean.normalise,
    "extract_hashtags": clean.extract_hashtags,
    "extract_mentions": clean.extract_mentions,
    "extract_urls": clean.extract_urls,
}
SIZES = (20_000, 100_000)


def make(unit: str | tuple[str, str], n: int) -> str:
    """At least n characters: the head, then whole units (a cut unit at the end would make 20k and 100k differ)."""
    head, body = unit if isinstance(unit, tuple) else ("", unit)
    return head + body * -(-(n - len(head)) // len(body))


def now(name: str) -> re.Pattern[str]:
    module, attr = name.split(".")
    return getattr(clean, attr)  # the PII scrub now lives in roost.corpus.clean too


def best_ms(fn: Callable[[str], object], text: str, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        fn(text)
        best = min(best, time.perf_counter() - t)
        if best > 1.0:  # a second or more: the figure is clear, spare the repeats
            break
    return best * 1e3


def finditer(rx: re.Pattern[str]) -> Callable[[str], object]:
    return lambda t: sum(1 for _ in rx.finditer(t))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="best of this many runs per figure")
    args = ap.parse_args()
    console = Console(width=max(Console().width, 180))  # the table stays readable when piped to a file
    table = Table(
        title=f"regex budget — {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()} "
        f"(ms, best of {args.runs})"
    )
    cols = ("family", "pattern", "input (tiled)", "roost call", "chars", "old pattern", "pattern now", "old ÷ now")
    for col in (*cols, "roost call now", "old pattern ÷ call"):
        table.add_column(col, justify="left" if col in cols[:4] else "right")
    worst = 0.0
    for family, name, unit, call in CASES:
        for n in SIZES:
            text = make(unit, n)
            before = best_ms(finditer(BEFORE[name]), text, args.runs)
            after = best_ms(finditer(now(name)), text, args.runs)
            roost = best_ms(CALLS[call], text, args.runs)
            if n == SIZES[0]:
                worst = max(worst, roost)
            first = n == SIZES[0]
            shown = f"{unit[0]!r} + {unit[1]!r}…" if isinstance(unit, tuple) else f"{unit!r}…"
            table.add_row(
                family if first else "",
                name if first else "",
                shown if first else "",
                call if first else "",
                f"{n:,}",
                f"{before:,.1f}",
                f"{after:,.1f}",
                f"{before / after:,.1f}×",
                f"{roost:,.1f}",
                f"{before / roost:,.1f}×",
            )
    console.print(table)
    console.print(
        f"old ÷ now: the same matches found by the old and the current pattern. old pattern ÷ call: the old pattern "
        f"alone against the whole roost call now (every pattern, replacements, checks). Slowest roost call at "
        f"{SIZES[0]:,} characters: {worst:.1f} ms (budget 50 ms)."
    )


if __name__ == "__main__":
    main()
