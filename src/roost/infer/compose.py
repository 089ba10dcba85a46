"""Compose and reply suggestions: N diverse candidates, each within the character limit by construction (cut at a
sentence end, else a word end — never mid-word), near-duplicates removed, leaks of corpus posts regenerated, and
every candidate labelled AI-generated with the model's name and sha256.

`roost compose "topic" --model NAME -n 3`, `roost reply x:123 --model NAME`, `POST /v1/compose`, `POST /v1/reply`.
"""

from __future__ import annotations

import functools
import queue
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from roost.corpus.dedup import shingles
from roost.infer.chat import ChatTemplate
from roost.infer.engine import Event, check_done
from roost.infer.guard import LeakGuard
from roost.infer.protocol import GenerationEngine
from roost.infer.sampling import SamplingParams

_SENTENCE_END = re.compile(r"[.!?…](?:[\"')\]]*)(?=\s|$)")


@dataclass
class ComposeConfig:
    """How many candidates, how long, how hard to try; `sampling` is each generation's (its seed is the first
    candidate's: candidate i of round r gets seed + 1000 r + i)."""

    n: int = 3
    max_chars: int = 280
    attempts: int = 3  # generations per requested candidate before giving up on it
    near_dup: float = 0.6  # Jaccard of character 5-shingles above which a candidate is a near-duplicate
    sampling: SamplingParams = field(default_factory=SamplingParams.for_suggestions)

    @classmethod
    def of(cls, n: int, max_chars: int, temperature: float = 0.9, seed: int | None = None) -> ComposeConfig:
        """The config of `roost compose`/`reply` and `/v1/compose`/`/v1/reply`: their sampling defaults."""
        return cls(n=n, max_chars=max_chars, sampling=SamplingParams.for_suggestions(max_chars, temperature, seed))


def fit(text: str, limit: int) -> str | None:
    """`text` within `limit` characters: whole if it fits, else up to its last sentence end, else its last word
    end; None when not even one word fits."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text or None
    head = text[: limit + 1]
    ends = [m.end() for m in _SENTENCE_END.finditer(head) if m.end() <= limit]
    if ends and ends[-1] >= limit // 3:
        return head[: ends[-1]].strip()
    cut = head.rfind(" ")
    if cut <= 0:
        return None
    return head[:cut].rstrip(" ,;:-–—")


def jaccard(a: str, b: str) -> float:
    sa, sb = set(shingles(a.lower(), 5)), set(shingles(b.lower(), 5))
    return len(sa & sb) / max(1, len(sa | sb))


def chat_prompt(system: str | None, user: str, template: ChatTemplate | None = None) -> str:
    """The prompt in the model's chat template (ChatML when it has none)."""
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    return (template or ChatTemplate(None)).render(msgs)


STOP_EVERY = 0.5  # seconds between two looks at `stop` while waiting for tokens


class Stopped(Exception):
    """`suggest` was stopped (its HTTP client left); its generations were cancelled."""


def _put(q: queue.Queue[tuple[int, Event]], i: int, ev: Event) -> None:
    q.put((i, ev))


def _next(q: queue.Queue[tuple[int, Event]], reqs: list[Any], stop: Callable[[], bool] | None) -> tuple[int, Event]:
    """The next event (600 s at most of silence), unless `stop` says so first: then every request is cancelled."""
    deadline = time.monotonic() + 600
    while True:
        if stop is not None and stop():
            for r in reqs:
                r.cancel()
            raise Stopped("the client left")
        try:
            return q.get(timeout=STOP_EVERY if stop is not None else 600)
        except queue.Empty:
            if time.monotonic() > deadline:
                raise


COMPOSE_SYSTEM = "You write short social media posts. Answer with the post only."
REPLY_SYSTEM = "You write short, friendly replies to social media posts. Answer with the reply only."


def suggest(
    engine: GenerationEngine,
    prompt: str,
    cfg: ComposeConfig,
    guard: LeakGuard | None,
    provenance: dict[str, Any],
    stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Generate cfg.n candidates for a chat prompt; returns {candidates, dropped: {near_duplicate, leak, empty}}.
    `stop` (the HTTP client left) is looked at every STOP_EVERY seconds at most: the running generations are
    cancelled and `Stopped` is raised."""
    ids = engine.tok.encode(prompt, add_special_tokens=False).ids
    kept: list[str] = []
    dropped = {"near_duplicate": 0, "leak": 0, "empty": 0}
    leaks: list[str] = []
    round_ = 0
    while len(kept) < cfg.n and round_ < cfg.attempts:
        want = cfg.n - len(kept)
        q: queue.Queue[tuple[int, Event]] = queue.Queue()
        texts = [""] * want
        reqs: list[Any] = []
        for i in range(want):
            params = cfg.sampling.nth(round_ * 1000 + i)
            reqs.append(engine.submit(ids, params, functools.partial(_put, q, i)))
        done = 0
        while done < want:
            i, ev = _next(q, reqs, stop)
            check_done(ev)
            texts[i] += ev.text
            done += ev.kind == "done"
        for t in texts:
            c = fit(t, cfg.max_chars)
            if not c:
                dropped["empty"] += 1
            elif guard is not None and (post := guard.check(c)):
                dropped["leak"] += 1
                leaks.append(post)
            elif any(jaccard(c, k) >= cfg.near_dup for k in kept):
                dropped["near_duplicate"] += 1
            else:
                kept.append(c)
        round_ += 1
    cands = [{"text": c, "chars": len(c), "ai_generated": True, **provenance} for c in kept[: cfg.n]]
    return {"candidates": cands, "dropped": dropped, "leaked_posts": leaks}
