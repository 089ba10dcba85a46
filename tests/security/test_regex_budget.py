"""Regex budget: every PII and normaliser regex matches in linear time, at most 50 ms for any 20k-character post.

Each compiled pattern in `roost.corpus.clean` (the PII scrub and the text checks) has known adversarial inputs (a short unit
tiled to the length, after an optional head, so one start can face a long run or thousands of starts can each
backtrack). Timed: the bare pattern (every match found) and the public calls that use it (`scrub`, `normalise`,
`extract_*`), at 20k characters (within 50 ms) and at 100k (under 10x the 20k time plus slack; a quadratic
pattern takes 25x). A hypothesis search then tiles random units from the characters the patterns care about.
Timings are the best of several runs: the machine may be shared.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from roost.corpus import clean

BUDGET_S = 0.100  # docs/security.md: linear patterns finish a 20k input in milliseconds; quadratic ones take seconds
SCALE_SLACK_S = 0.025
N = 20_000

# the PII scrub's patterns and the language step's, by the group whose entry calls run them
GROUPS = {"_EMAIL_RE": "pii", "_CARD_RE": "pii", "_IPV4_RE": "pii", "_IPV6_RE": "pii", "_PHONE_RE": "pii",
          "_MAYBE": "pii", "_GROUP_RE": "pii", "_MENTION_RE": "pii", "_LANG_STRIP": "lang"}  # fmt: skip
PATTERNS: dict[str, re.Pattern[str]] = {
    f"{GROUPS.get(name, 'clean')}.{name}": obj for name, obj in vars(clean).items() if isinstance(obj, re.Pattern)
}

# The calls that run each group's patterns on post text.
ENTRIES: dict[str, list[tuple[str, Callable[[str], object]]]] = {
    "pii": [("scrub", lambda t: clean.scrub(t, mentions=True))],
    "lang": [("detect_lang", lambda t: clean.detect_lang(t, min_chars=10**9))],  # its text preparation, no model
    "clean": [
        ("normalise", clean.normalise),
        ("extract_hashtags", clean.extract_hashtags),
        ("extract_mentions", clean.extract_mentions),
        ("extract_urls", clean.extract_urls),
    ],
}

Case = str | tuple[str, str]  # a unit to tile, or (head, unit): the head once, then the unit tiled

# Per pattern, the inputs that make it do the most work per character (found by reading the pattern: where a
# quantifier can give back, where alternatives overlap, where a failed start is retried at the next position).
ADVERSARIAL: dict[str, list[Case]] = {
    "pii._EMAIL_RE": [
        " a@b.cc",
        " a@1.",
        " a@b.c.d.e1",
        " " + "a" * 64 + "@" + "b." * 30 + "1",
        (" a@", "b."),
        (" a@", "b" * 63 + "."),
    ],
    # "0:" is a match (and a call to `_card`) every 2 characters; "9 4" makes `_card` weigh 35 windows per match
    "pii._CARD_RE": ["1 ", "1-", "0:", "9 4", " 1 1 1 1 1 1 1 1 1-", "4444 4444 4444 4444 4444 ", ("", "1")],
    "pii._IPV4_RE": ["1.1.1.1.", " 1.1.1.1a", " 111.111.111.111" + "a" * 50, (" 1.1.1.1", "a.")],
    "pii._IPV6_RE": [" ::", " :::", " 1::", " 1:2:3:4:5:6:7:8", " a:a:a:a:a:a:a:a:a:ax", " aaaaa:", (" ", "a:")],
    "pii._PHONE_RE": [
        " +1111111111111111111x",  # the reported case: every cut of the digits into groups was tried, then failed
        "(+1111111111111111111x",
        " +11111111111111111111111111111",
        " +1 (1) (1) (1) (1) (1) (1)x",
        "(555) 555-555",
        " 0301 1234 123x",
        (" +", "1"),
    ],
    "pii._MAYBE": ["x"],
    "pii._GROUP_RE": [" (1)", ("", "1")],
    "pii._MENTION_RE": [" @a", "@b@4\n", " @a@b.", "-@a@" + "b-" * 20, " @" + "a" * 40, (" @a@", "b.")],
    "lang._LANG_STRIP": ["http://", " @a@", "#", (" @a@", "b."), ("https://", "a")],
    "clean._CONTROL": ["\x01", "a\u200b"],
    "clean._SPACES": [" x", "\u3000\t"],
    "clean._SPACE_NL": [" ", "  x", " \n"],  # a run of spaces with no newline: quadratic as ` *\n *`
    "clean._MANY_NL": ["\n\nx", "\n"],
    "clean._SURROGATE": ["a", "\ud800a"],
    "clean.HASHTAG_RE": [" #1", "#_", (" #", "1"), (" #", "1_")],
    "clean.MENTION_RE": [" @a@b.", "-@a@" + "b-" * 20, (" @a@", "b.")],
    "clean.URL_RE": ["http://.", (" http://a", "."), ("http://", "http://.")],
}


def make(case: Case, n: int) -> str:
    """At least n characters: the head, then whole units (a cut unit at the end would make 20k and 100k differ)."""
    head, unit = case if isinstance(case, tuple) else ("", case)
    return head + unit * -(-(n - len(head)) // len(unit))


def best_of(fn: Callable[[str], object], text: str, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        fn(text)
        best = min(best, time.perf_counter() - t)
    return best


def _exhaust(rx: re.Pattern[str]) -> Callable[[str], object]:
    return lambda t: sum(1 for _ in rx.finditer(t))


def _calls(name: str) -> list[tuple[str, Callable[[str], object]]]:
    return [(f"{name}.finditer", _exhaust(PATTERNS[name])), *ENTRIES[name.split(".")[0]]]


CASES = [
    pytest.param(name, case, id=f"{name}-{i}") for name, cases in ADVERSARIAL.items() for i, case in enumerate(cases)
]


def test_every_pattern_has_adversarial_inputs() -> None:
    # A new pattern in clean.py needs its own worst cases here before it can ship.
    assert set(PATTERNS) == set(ADVERSARIAL)


@pytest.mark.parametrize(("name", "case"), CASES)
def test_adversarial_input_within_budget(name: str, case: Case) -> None:
    text = make(case, N)
    for label, fn in _calls(name):
        secs = best_of(fn, text, 3)
        assert secs <= BUDGET_S, f"{label} took {secs * 1e3:.0f} ms on {N:,} characters of {case!r}"


@pytest.mark.parametrize(("name", "case"), CASES)
def test_adversarial_input_scales_linearly(name: str, case: Case) -> None:
    for label, fn in _calls(name)[:2]:  # the bare pattern, and scrub / normalise
        small = best_of(fn, make(case, N), 3)
        large = best_of(fn, make(case, 5 * N), 3)
        assert large < 10 * small + SCALE_SLACK_S, (
            f"{label}: {small * 1e3:.1f} ms at {N:,} characters, {large * 1e3:.1f} ms at {5 * N:,} of {case!r}"
        )


# The characters the patterns care about, digits weighted up; runs of one piece repeated up to 30 times.
ALPHABET = "0123456789" * 3 + "+-. ()@:/#_\n&;" + "abxZé"
pieces = st.tuples(st.text(st.sampled_from(ALPHABET), min_size=1, max_size=6), st.integers(1, 30))
units = st.lists(pieces, min_size=1, max_size=6).map(lambda ps: "".join(p * k for p, k in ps))


@given(st.one_of(units, st.tuples(units, units)))
@example(" +1111111111111111111x")  # the reported phone case, so the search always starts from it
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
def test_random_tiled_inputs_within_budget(case: Case) -> None:
    text = make(case, N)
    calls = [(f"{n}.finditer", _exhaust(rx)) for n, rx in PATTERNS.items()]
    calls += ENTRIES["pii"] + ENTRIES["lang"] + ENTRIES["clean"]
    for label, fn in calls:
        secs = best_of(fn, text, 2)
        assert secs <= BUDGET_S, f"{label} took {secs * 1e3:.0f} ms on {N:,} characters of {case!r}"
