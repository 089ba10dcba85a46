"""Build a generation engine from a model name and arguments (as vLLM builds one from `EngineArgs`): used by
`roost serve`, `roost compose`/`reply` and `roost ask`. Both loaders return a `LoadedModel`:

    loaded = load_engine(ctx.ws, "smollm2", max_batch=8)          # or load_upstream(ctx.ws, "smollm2", urls)
    loaded.engine.submit(...); loaded.name, loaded.sha256, loaded.template
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from roost.errors import UsageError
from roost.model.imports import resolve_model
from roost.model.shapes import read_json
from roost.workspace import Workspace

if TYPE_CHECKING:
    from roost.infer.chat import ChatTemplate
    from roost.infer.protocol import GenerationEngine


@dataclass
class LoadedModel:
    """A model ready to generate: its engine, the name it is served as, the sha256 of its weights (what every label
    carries) and its chat template."""

    engine: GenerationEngine
    name: str
    sha256: str
    template: ChatTemplate


def load_engine(
    ws: Workspace,
    name: str,
    max_batch: int = 8,
    max_queue: int = 32,
    max_seq: int = 2048,
    dtype: str = "auto",
    quant: str | None = None,
    start: bool = True,
    say: Callable[[str], None] | None = None,
) -> LoadedModel:
    """An `Engine` on `models/NAME` (or a model directory) in the dtype the probe picks for decode (or `dtype`),
    with its name, weights sha256 and chat template; `say` gets the one-line dtype choice."""
    import torch

    from roost.infer.engine import Engine
    from roost.model.convert import load_model_dir

    path = resolve_model(ws, name)
    model, meta = load_model_dir(path)
    tok, eos, template = text_side(path)
    from roost.probe import choose

    choice = choose("decode", dtype)  # UsageError for anything but auto, fp32, bf16
    if say:
        say(f"{path.name}: {choice.line()}")
    if quant not in (None, "int8"):
        raise UsageError(f"--quant must be int8 (or left out), got {quant!r}")
    if torch.cuda.is_available():
        model.to("cuda")
        if quant:
            raise UsageError("--quant int8 is the CPU path; on a GPU serve bf16")
    engine = Engine(
        model,
        tok,
        eos,
        max_batch=max_batch,
        max_seq=max_seq,
        max_queue=max_queue,
        dtype=torch.bfloat16 if choice.dtype == "bf16" else None,
        quant=quant,
        start=start,
    )
    return LoadedModel(engine, path.name, str(meta.get("model_sha256", "unknown")), template)


class TextSide(NamedTuple):
    """What roost renders and encodes itself, whichever engine generates."""

    tok: Any  # the folder's tokenizer.json
    eos_ids: set[int]  # its end-of-turn ids
    template: ChatTemplate  # its chat template (ChatML when it has none)


def text_side(path: Path) -> TextSide:
    """The model folder's tokenizer, its end-of-turn ids and its chat template."""
    from roost.data import tokenizer as toklib
    from roost.infer.chat import ChatTemplate

    tok = toklib.load(path / "tokenizer.json")
    tc_path = path / "tokenizer_config.json"
    tc = read_json(tc_path) if tc_path.is_file() else {}
    if not isinstance(tc, dict):
        raise UsageError(f"{tc_path}: expected a JSON object")
    eos = {
        i
        for i in (tok.token_to_id(t) for t in ("<|im_end|>", "<|endoftext|>", tc.get("eos_token") or ""))
        if i is not None
    }
    template = ChatTemplate(tc.get("chat_template"), tc, origin=f"{path}/tokenizer_config.json chat_template")
    return TextSide(tok, eos, template)


def vouch(path: Path, local_sha: str, url: str, card: dict[str, Any], pin: str | None, own: bool = False) -> str:
    """How roost knows `url` serves this folder's weights: the operator pinned their sha256, or roost started the
    replica itself on this very folder (`--vllm`) and its card names it. A card's `root` from any other upstream
    is only its claim (it can name any folder, the served one included), so roost never hashes a path an upstream
    chose. Raises UsageError when neither holds (roost will not label text with a hash it cannot vouch for)."""
    from roost.infer.upstream_io import redact_url

    if pin is not None and pin != local_sha:
        raise UsageError(f"--upstream-sha256 {pin} is not the sha256 of {path} ({local_sha})")
    if pin is not None:
        return "pinned by the operator (--upstream-sha256)"
    root = card.get("root")
    if own and isinstance(root, str) and _same_folder(Path(root), path):
        return f"a replica roost started on {path}"
    raise UsageError(
        f"{redact_url(url)} serves {card.get('id')!r} from {str(root)[:200]!r}: roost cannot check that those are the "
        f"weights of {path} (sha256 {local_sha[:12]}…). Pass --upstream-sha256 {local_sha} to vouch for the upstream "
        "yourself, or let roost start the replicas (--vllm N)"
    )


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def served_card(url: str, name: str, wait_s: float) -> dict[str, Any]:
    """The upstream's model card (`GET /v1/models`, read to at most MAX_CARD_BYTES), waiting up to `wait_s` for it
    to come up. Messages name the URL without its credentials."""
    import time

    import httpx

    from roost.infer.upstream_io import IDENTITY, MAX_CARD_BYTES, check_encoding, read_capped_sync, redact_url, scrub

    shown = redact_url(url)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with httpx.stream("GET", f"{url.rstrip('/')}/v1/models", headers=IDENTITY, timeout=5) as r:
                check_encoding(r)
                raw, over = read_capped_sync(r, MAX_CARD_BYTES)
            if over:
                raise UsageError(f"upstream {shown}: its model list is over {MAX_CARD_BYTES} bytes")
            cards = json.loads(raw).get("data") or []
            break
        except Exception as e:  # unreachable, not JSON, not a list of cards: retried until the deadline
            if isinstance(e, UsageError) or time.monotonic() > deadline:
                why = scrub(f"{type(e).__name__}: {e}", [url])
                raise UsageError(f"upstream {shown}: not reachable or not OpenAI-compatible ({why})") from None
            time.sleep(1)
    if not isinstance(cards, list) or not cards or not all(isinstance(c, dict) for c in cards):
        raise UsageError(f"upstream {shown}: serves no model")
    card = next((c for c in cards if c.get("id") == name), cards[0])
    return dict(card)


def load_upstream(
    ws: Workspace,
    name: str,
    urls: list[str],
    max_seq: int = 2048,
    max_queue: int = 256,
    pin: str | None = None,
    wait_s: float = 30.0,
    say: Callable[[str], None] | None = None,
    own: Collection[str] = (),
) -> LoadedModel:
    """An `UpstreamEngine` over `urls` for `models/NAME`: the folder gives the tokenizer, chat template and the
    sha256 the labels carry; every upstream must serve those weights (see `vouch`) under one served name. `own`:
    the URLs of replicas roost started itself on that folder."""
    from roost.infer.upstream import UpstreamEngine
    from roost.infer.upstream_io import redact_url

    path = resolve_model(ws, name)
    meta_path = path / "roost.json"
    from roost.model.convert import weights_sha256

    meta = read_json(meta_path) if meta_path.is_file() else {}
    local = meta.get("model_sha256") if isinstance(meta, dict) else None
    local = local or weights_sha256(path)
    if not local:
        raise UsageError(f"{path}: no safetensors weights to identify the model by")
    tok, eos, template = text_side(path)
    served, limit = None, max_seq
    cards = []
    for url in urls:
        card = served_card(url, name, wait_s)
        cards.append(card)
        how = vouch(path, local, url, card, pin, own=url in own)
        if served is not None and card.get("id") != served:
            raise UsageError(f"upstreams serve different names ({served!r}, {card.get('id')!r}): serve one model")
        served = str(card.get("id"))
        try:
            ctx = int(card.get("max_model_len") or max_seq)
        except (TypeError, ValueError):
            ctx = 0
        if ctx < 1:
            raise UsageError(f"upstream {redact_url(url)}: its card gives no usable max_model_len")
        limit = min(limit, ctx)
        if say:
            say(f"upstream {redact_url(url)}: serves {served} ({how})")
    engine = UpstreamEngine(urls, tok, eos, limit, str(served), max_queue=max_queue)
    for u, card in zip(engine.router.upstreams, cards, strict=True):
        u.card = (card.get("id"), card.get("root"))
    return LoadedModel(engine, path.name, str(local), template)
