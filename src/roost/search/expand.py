"""The LLM improves search: query expansion at query time, synthetic queries offline.

- `expand_query`: the served model proposes related words and hashtags for a query; they enter hybrid search
  as a third, half-weight keyword ranking (`roost search --expand -m MODEL`, `{"expand": true}` on
  `POST /v1/search`). `search.expand` turns it on by default — do that only where `roost eval search` shows a gain.
- `synthetic_queries`: the model writes the query someone would type to find a post. `roost eval search` uses
  them to build a known-item eval set from your own posts (tune half / held-out half) and to tune the fusion
  weights (`--tune`), which are stored in index/meta.json.
"""

from __future__ import annotations

import queue
import re
from typing import Any

from roost.infer.chat import ChatTemplate
from roost.infer.engine import check_done
from roost.infer.protocol import GenerationEngine
from roost.infer.sampling import SamplingParams
from roost.search.query import STOPWORDS

EXPAND_SYSTEM = (
    "You help people search social media posts. Reply with up to six single words or hashtags that posts about "
    "the search would contain, separated by commas. Reply with the words only."
)
SYNTH_SYSTEM = (
    "Write the short search query (two to six words) that someone would type to find the given social media post. "
    "Do not copy the post. Reply with the query only."
)
_TERM = re.compile(r"#?[^\W_][\w'-]{1,29}", re.UNICODE)


def _prompt(template: ChatTemplate, system: str, user: str) -> str:
    return template.render([{"role": "system", "content": system}, {"role": "user", "content": user}])


def _generate(
    engine: GenerationEngine, prompts: list[str], max_tokens: int, temperature: float = 0.0, top_p: float = 1.0
) -> list[str]:
    """Generate for many prompts at once (the engine batches them); texts in prompt order."""
    out = [""] * len(prompts)
    q: queue.Queue[tuple[int, Any]] = queue.Queue()
    pending = 0
    nxt = 0
    window = max(1, engine.max_queue // 2 + engine.max_batch)
    while nxt < len(prompts) or pending:
        while nxt < len(prompts) and pending < window:
            ids = engine.tok.encode(prompts[nxt], add_special_tokens=False).ids
            p = SamplingParams(
                max_tokens=max_tokens, temperature=temperature, top_p=top_p, repetition_penalty=1.1, seed=nxt
            )
            engine.submit(ids, p, lambda ev, i=nxt: q.put((i, ev)))
            nxt += 1
            pending += 1
        i, ev = q.get(timeout=600)
        check_done(ev)
        out[i] += ev.text
        pending -= ev.kind == "done"
    return out


def parse_terms(text: str, query: str, max_terms: int = 6) -> list[str]:
    """Words/hashtags from the model's reply: lower-cased, unique, not already in the query."""
    have = {w.lower().lstrip("#") for w in re.findall(r"\w+", query)}
    out: list[str] = []
    for m in _TERM.finditer(text):
        t = m.group().lower().strip("'-")
        if len(t.lstrip("#")) < 3 or t.lstrip("#") in have or t in out or t in STOPWORDS or "'" in t:
            continue
        out.append(t)
        if len(out) >= max_terms:
            break
    return out


def expand_query(engine: GenerationEngine, template: ChatTemplate, query_text: str, max_terms: int = 6) -> list[str]:
    if not query_text.strip():
        return []
    (text,) = _generate(engine, [_prompt(template, EXPAND_SYSTEM, f"Search: {query_text}")], 32)
    return parse_terms(text, query_text, max_terms)


_META = re.compile(
    r"^(the |this )?(post|query|search( query)?|answer)( is| was| titled| about)?\W*|^(here is|to (find|complete|create)"
    r"[^,]*,)\W*",
    re.I,
)
_REFUSAL = re.compile(r"\b(i'?m sorry|i can'?t|i cannot|unable to|as an ai)\b", re.I)


def synthetic_queries(engine: GenerationEngine, template: ChatTemplate, posts: list[str]) -> list[str]:
    """One query per post (cleaned: one line, no quotes/operators or preambles, at most 12 words; '' for a refusal,
    which the caller skips)."""
    prompts = [_prompt(template, SYNTH_SYSTEM, "Post: " + " ".join(p.split())[:400]) for p in posts]
    out = []
    # sampled (seeded per post, so reproducible): varied phrasings, as real queries are
    for text in _generate(engine, prompts, 24, temperature=0.7, top_p=0.9):
        line = next((ln for ln in text.strip().splitlines() if ln.strip()), "")
        if _REFUSAL.search(line):
            out.append("")
            continue
        line = _META.sub("", re.sub(r'["“”]', " ", line).strip()).replace(":", " ")
        words = [w for w in line.split() if not w.startswith("-") and w.upper() != "OR"][:12]
        out.append(" ".join(words))
    return out
