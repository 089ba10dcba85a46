"""Normaliser and PII scrubber: property-based (hypothesis) plus concrete cases."""

from __future__ import annotations

import re
import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from roost.corpus.clean import (
    CARD,
    EMAIL,
    IP,
    MENTION,
    PHONE,
    extract_hashtags,
    extract_mentions,
    extract_urls,
    luhn_ok,
    normalise,
    scrub,
)

texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=300)


@given(texts)
@settings(max_examples=400, deadline=None)
def test_normalise_is_idempotent_nfc_and_clean(s: str) -> None:
    out = normalise(s)
    assert normalise(out) == out
    assert unicodedata.is_normalized("NFC", out)
    assert out == out.strip()
    assert "\x00" not in out and "\r" not in out and "\t" not in out
    assert "  " not in out and "\n\n\n" not in out


@given(st.lists(st.sampled_from(["a", "&amp;", "&lt;", "&#x1F600;", " ", "\n", "\t", "e\u0301", "&"]), max_size=40))
def test_normalise_decodes_entities_to_a_fixpoint(parts: list[str]) -> None:
    out = normalise("".join(parts))
    assert normalise(out) == out
    assert "&amp;" not in out and "&lt;" not in out


def test_normalise_examples() -> None:
    assert normalise("  caf\u0065\u0301 &amp; cr\u00e8me\r\n\r\n\r\n\tok  ") == "café & crème\n\nok"
    assert normalise("&amp;lt;b&amp;gt;") == "<b>"


def _luhn_digit(body: str) -> str:
    for d in "0123456789":
        if luhn_ok(body + d):
            return d
    raise AssertionError


_card_digits = st.text("0123456789", min_size=15, max_size=15).map(lambda b: "4" + b[:14] + _luhn_digit("4" + b[:14]))
cards = st.one_of(
    _card_digits,
    _card_digits.map(lambda c: " ".join(c[i : i + 4] for i in range(0, 16, 4))),
    _card_digits.map(lambda c: "-".join(c[i : i + 4] for i in range(0, 16, 4))),
)
emails = st.from_regex(r"[a-z][a-z0-9._]{0,15}[a-z0-9]@[a-z]{2,10}\.(com|org|de|co\.uk)", fullmatch=True)
ips = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
phones = st.tuples(st.integers(200, 999), st.integers(200, 999), st.integers(1000, 9999)).map(
    lambda t: f"+1 {t[0]} {t[1]} {t[2]}"
)
words = st.lists(
    st.sampled_from(["hello", "the", "meeting", "is", "at", "noon", "ok?", "#tag", "2024", "42"]), max_size=8
).map(" ".join)


@given(words, st.one_of(cards, emails, ips, phones), words)
@settings(max_examples=300, deadline=None)
def test_scrub_removes_planted_pii(before: str, pii: str, after: str) -> None:
    text = f"{before} {pii} {after}".strip()
    out, hits = scrub(text)
    assert pii not in out
    assert sum(hits.values()) >= 1
    assert scrub(out)[0] == out  # idempotent
    assert any(p in out for p in (EMAIL, PHONE, CARD, IP))


@given(words)
def test_scrub_leaves_plain_text_alone(text: str) -> None:
    out, hits = scrub(text)
    assert out == text and not hits


@given(texts)
@settings(max_examples=300, deadline=None)
def test_scrub_is_idempotent_on_anything(s: str) -> None:
    out, _ = scrub(s, mentions=True)
    assert scrub(out, mentions=True)[0] == out


def test_scrub_examples_and_luhn() -> None:
    out, hits = scrub(
        "card 4111 1111 1111 1111 vs 4111 1111 1111 1112, ip 10.0.0.256 vs 192.168.1.7, "
        "v6 2001:db8::1, mail a.b@ex.example.com, tel (555) 123-4567; on 2024-01-02 at 12:30"
    )
    assert out.count(CARD) == 1 and "4111 1111 1111 1112" in out  # the second fails the Luhn check
    assert "10.0.0.256" in out and out.count(IP) == 2
    assert EMAIL in out and PHONE in out and "2024-01-02" in out and "12:30" in out
    assert hits["card"] == 1 and hits["ip"] == 2 and hits["email"] == 1 and hits["phone"] == 1
    out, hits = scrub("thanks @alice and @bob@mastodon.social", mentions=True)
    assert out == f"thanks {MENTION} and {MENTION}" and hits["mention"] == 2


def test_entity_extraction() -> None:
    t = "Loving #Rust2024 and #café with @ana_b and @c@fosstodon.org see https://ex.example/a?b=1. #1 not a tag"
    assert extract_hashtags(t) == ["Rust2024", "café"]
    assert extract_mentions(t) == ["ana_b", "c@fosstodon.org"]
    assert extract_urls(t) == ["https://ex.example/a?b=1"]
    assert not re.search(r"\s", "".join(extract_urls(t)))
