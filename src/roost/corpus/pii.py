"""PII scrub for training text: e-mail addresses, phone numbers, payment card numbers (Luhn-checked), IP
addresses, and optionally @mentions, replaced by placeholders.

Part of `roost ingest` (the store keeps the original and the scrubbed text; training reads the scrubbed one).
`scrub()` is idempotent and never leaves a match of its own patterns behind (property-tested).
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import re
from collections import Counter

EMAIL = "<EMAIL>"
PHONE = "<PHONE>"
CARD = "<CARD>"
IP = "<IP>"
MENTION = "@<USER>"

# Every pattern here matches in linear time, and `scrub` stays within 50 ms for any 20k-character post
# (tests/security/test_regex_budget.py; `python -m bench.regex`).
_EMAIL_RE = re.compile(r"(?<![\w.+@-])[\w.+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}\b")
# Runs of digit groups separated by single spaces or dashes; `_card` finds the card numbers inside a run:
# 13-19 digits contiguous, in groups of four (4-4-4-4, 4-4-4-4-3, 4-4-4-1..), or Amex/Diners 4-6-5 / 4-6-4, passing
# Luhn. ("42 42 42 42 42 42 42" is not a card; "2024 4000 1000 1000 0008" holds one.) The lookahead skips runs of
# fewer than 13 digits, which `_card` leaves alone anyway: "0:0:0:..." would otherwise call it 10,000 times.
_CARD_RE = re.compile(r"(?<![\w.-])(?=(?:\d[ -]?+){13})\d++(?:[ -]\d++){0,8}(?![\w-])")
_IPV4_RE = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.]*\d)")
_IPV6_RE = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
# International (+CC, then groups; trimmed to the number's own length below), North American (555) 123-4567,
# and national numbers with a trunk 0 (030 1234 5678).
# The international branch was `\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){1,6}(?!\w)`, which tries every way of cutting a
# run of digits into a 1-3 digit code and up to six 1-4 digit groups before it fails (thousands of paths per '+':
# 0.5-1.5 s for a 20k-character post of "+1111111111111111111x"). A match can only end where a run of digits ends,
# so here each run is cut one way: 4 digits while more follow (`\d{4}(?=\d)`), then the rest (`\d{1,4}+(?!\d)`).
# That cut needs the fewest groups, so it reaches every end any other cut reaches: the same matches, found in
# linear time. The code takes 3 digits when more follow, else the whole run, else all but the last digit (which
# then makes the one group: "+12", "+12) 345").
_PHONE_RE = re.compile(
    r"(?<![\w+])\+(?:\d{3}(?=\d)|\d{1,3}+(?!\d)|\d{1,2}(?=\d(?!\d)))"
    r"(?:[ .-]?\(?(?:\d{4}(?=\d)|\d{1,4}+(?!\d))\)?){1,6}(?!\w)"
    r"|(?<![\w(])\(?\d{3}\)?[ .-]?\d{3}[ .-]\d{4}(?![\w-])"
    r"|(?<!\w)0\d{2,4}[ /-]\d{3,4}[ -]?\d{3,4}(?![\w-])"
)
_MAYBE = re.compile(r"[0-9@]")
_GROUP_RE = re.compile(r"[ .-]?\(?\d+\)?")
_MENTION_RE = re.compile(r"(?<![\w@/<])@(?!<USER>)\w{1,30}(?:@[\w.-]+\.\w+)?")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card_shape(lens: list[int]) -> bool:
    if len(lens) == 1:
        return 13 <= lens[0] <= 19
    if lens in ([4, 6, 5], [4, 6, 4]):
        return True
    return len(lens) >= 4 and all(n == 4 for n in lens[:-1]) and 1 <= lens[-1] <= 4 and 13 <= sum(lens) <= 19


def _card(m: re.Match[str], hits: Counter[str]) -> str:
    text = m.group()
    spans = [g.span() for g in re.finditer(r"\d+", text)]
    lens = [hi - lo for lo, hi in spans]
    if sum(lens) < 13:
        return text
    ends = [0, *itertools.accumulate(lens)]  # digits before group i: a window's count without summing it
    out, i, pos = [], 0, 0
    while i < len(spans):
        for size in range(min(5, len(spans) - i), 0, -1):  # the longest card-shaped run of groups at i
            if not 13 <= ends[i + size] - ends[i] <= 19:  # every card shape holds 13-19 digits
                continue
            lo, hi = spans[i][0], spans[i + size - 1][1]
            if _card_shape(lens[i : i + size]) and luhn_ok(re.sub(r"\D", "", text[lo:hi])):
                out.append(text[pos:lo] + CARD)
                hits["card"] += 1
                pos, i = hi, i + size
                break
        else:
            i += 1
    return "".join(out) + text[pos:]


@functools.lru_cache(maxsize=4096)
def _ip_ok(s: str) -> bool:
    # The family is known from the match (only IPv6 has ':'), so no IPv4 parse fails first; cached because a post
    # of 6,000 "::" would otherwise spend ~30 ms of its 50 ms budget in ipaddress.
    try:
        (ipaddress.IPv6Address if ":" in s else ipaddress.IPv4Address)(s)
    except ValueError:
        return False
    return True


def _ip(m: re.Match[str], hits: Counter[str]) -> str:
    if not _ip_ok(m.group()):
        return m.group()
    hits["ip"] += 1
    return IP


def _phone(m: re.Match[str], hits: Counter[str]) -> str:
    s = m.group()
    if not s.startswith("+"):
        hits["phone"] += 1
        return PHONE
    # "+1 555 123 4567 2024" — stop at the first prefix of groups with 10+ digits; the rest is not the number.
    digits, end = 0, 0
    for g in _GROUP_RE.finditer(s, 1):
        digits += sum(c.isdigit() for c in g.group())
        end = g.end()
        if digits >= 10:
            break
    if 8 <= digits <= 15:
        hits["phone"] += 1
        return PHONE + s[end:]
    return s


def scrub(text: str, mentions: bool = False) -> tuple[str, Counter[str]]:
    """Return (scrubbed text, hits by kind). Order matters: e-mails before mentions, cards before phones."""
    hits: Counter[str] = Counter()
    if not mentions and _MAYBE.search(text) is None:  # every pattern but mentions needs a digit or an '@'
        return text, hits
    for _ in range(4):  # replacements can expose new matches at their edges; run to a fixpoint
        before = text
        text, n = _EMAIL_RE.subn(EMAIL, text)  # a fixed replacement: no Python call per match
        if n:
            hits["email"] += n
        text = _CARD_RE.sub(lambda m: _card(m, hits), text)
        text = _IPV4_RE.sub(lambda m: _ip(m, hits), text)
        if ":" in text:
            text = _IPV6_RE.sub(lambda m: _ip(m, hits), text)
        text = _PHONE_RE.sub(lambda m: _phone(m, hits), text)
        if mentions:
            text, n = _MENTION_RE.subn(MENTION, text)
            if n:
                hits["mention"] += n
        if text == before:
            break
    return text, hits
