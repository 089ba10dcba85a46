"""The inference engine behind `roost serve`, `roost compose` and `roost reply`: a preallocated GQA KV cache with one
row per running request, prefill then decode, and continuous batching — requests join and leave the running batch
between decode steps, new ones wait in a bounded queue. It is one of the two `GenerationEngine`s
(roost.infer.protocol); the other generates on upstream replicas (roost.infer.upstream).

    engine = Engine(model, tokenizer, max_batch=8)        # starts its worker thread
    req = engine.submit(prompt_ids, SamplingParams(max_tokens=60, seed=1), on_event)
    text = engine.complete(prompt_ids, params)             # blocking helper

Each decode step runs the model once for every running request (rows of the cache chosen by `cache_rows`, each at
its own position; attention is masked to the row's own history). Text is streamed with incremental
detokenisation that never splits a UTF-8 character (a trailing U+FFFD is held back) and never shows the start
of a stop string before it is known not to be one.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from roost.infer.protocol import GenerationEngine, UpstreamHook
from roost.infer.sampling import RequestSampler, SamplingParams
from roost.model.llama import Llama

if TYPE_CHECKING:
    from roost.infer.upstream import Upstream


class QueueFull(Exception):
    """The waiting queue is at its cap (the server answers 429 with Retry-After)."""


class EngineStopped(Exception):
    """The engine is shutting down (the server answers 503)."""


class Unavailable(EngineStopped):
    """No backend can serve the request now: every upstream is down (the server answers 503 with Retry-After)."""


@dataclass
class Event:
    kind: str  # "delta" or "done"
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str | None = None
    usage: dict[str, int] | None = None


_ids = itertools.count(1)
log = logging.getLogger(__name__)


class Request:
    def __init__(self, prompt_ids: list[int], params: SamplingParams, emit: Callable[[Event], None]):
        self.id = next(_ids)
        self.prompt_ids, self.params, self.emit = prompt_ids, params, emit
        self.out_ids: list[int] = []
        self.emitted = ""
        self.pending_logprobs: list[dict[str, Any]] = []
        self.cancelled = False
        self.done = False
        self.sampler: RequestSampler | None = None
        self.pos = 0
        self.t_submit = time.perf_counter()
        self.t_first: float | None = None

    def cancel(self) -> None:
        self.cancelled = True


class Engine(GenerationEngine):
    """The in-process `GenerationEngine`: the model on this machine, continuous batching over its KV cache."""

    on_upstream: UpstreamHook | None = None  # no upstreams: never called

    def __init__(
        self,
        model: Llama,
        tokenizer: Any,
        eos_ids: set[int],
        max_batch: int = 8,
        max_seq: int = 2048,
        max_queue: int = 64,
        dtype: torch.dtype | None = None,
        start: bool = True,
        quant: str | None = None,
    ):
        self.model = model.eval()
        if dtype is not None or quant == "int8":
            self.model.to(dtype or torch.bfloat16)
        if quant == "int8":
            from roost.infer.quant import quantize_int8

            quantize_int8(self.model)
        elif quant is not None:
            raise ValueError(f"quant must be int8 or None, got {quant!r}")
        self.tok = tokenizer
        self.eos_ids = eos_ids
        self.max_batch, self.max_queue = max_batch, max_queue
        self.max_seq = min(max_seq, model.config.max_seq_len)
        self.device = model.model.embed_tokens.weight.device
        self.vocab = model.config.vocab_size
        model.setup_kv_cache(max_batch, self.max_seq)
        self.slots: list[Request | None] = [None] * max_batch
        self.waiting: deque[Request] = deque()
        self.cv = threading.Condition()
        self.running = True
        self.stats = {"prefill_tokens": 0, "decode_tokens": 0, "decode_steps": 0, "finished": 0}
        self._threads = torch.get_num_threads()
        self.thread: threading.Thread | None = None
        if start:
            self.thread = threading.Thread(target=self._loop, daemon=True, name="roost-engine")
            self.thread.start()

    def run(self) -> None:
        """Drive the engine from the calling thread until `shutdown()`. On CPU, call it from the main thread: torch's
        OpenMP team of the main thread is the warm one (the same decode step runs ~1.7× slower from a new thread)."""
        self._loop()

    # -- public ------------------------------------------------------------------------------------------------------
    def submit(self, prompt_ids: list[int], params: SamplingParams, emit: Callable[[Event], None]) -> Request:
        """Queue a request; raises ValueError (client error), QueueFull or EngineStopped."""
        check_request(prompt_ids, params, self.max_seq, self.vocab)
        req = Request(prompt_ids, params, emit)
        with self.cv:
            if not self.running:
                raise EngineStopped("the server is shutting down")
            if len(self.waiting) >= self.max_queue:
                raise QueueFull(f"{len(self.waiting)} requests are waiting (cap {self.max_queue})")
            self.waiting.append(req)
            self.cv.notify()
        return req

    def queue_depth(self) -> int:
        return len(self.waiting)

    def kv_usage(self) -> float:
        used = sum(r.pos for r in self.slots if r is not None)
        return used / (self.max_batch * self.max_seq)

    def active(self) -> int:
        return sum(r is not None for r in self.slots)

    def upstreams(self) -> Sequence[Upstream]:
        return ()  # generates in process

    def shutdown(self, drain_timeout: float = 10.0) -> None:
        with self.cv:
            self.running = False
            while self.waiting:
                r = self.waiting.popleft()
                r.emit(Event("done", finish_reason="shutdown", usage=self._usage(r)))
            self.cv.notify()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout=drain_timeout)

    # -- worker ------------------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        torch.set_num_threads(self._threads)  # the OpenMP team of this thread, as large as the main thread's
        while True:
            with self.cv:
                while self.running and not self.waiting and self.active() == 0:
                    self.cv.wait(timeout=0.5)
                if not self.running and self.active() == 0:
                    return
                admit = []
                for i, r in enumerate(self.slots):
                    if r is None and self.waiting:
                        admit.append((i, self.waiting.popleft()))
            try:
                for slot, req in admit:
                    self.slots[slot] = req  # placed first, so a failure below still finishes it
                for slot, req in admit:
                    if req.cancelled:
                        self._finish(slot, req, "cancelled")
                        continue
                    self._prefill(slot, req)
                for i, r in enumerate(self.slots):
                    if r is not None and r.cancelled:
                        self._finish(i, r, "cancelled")
                if self.active():
                    self._decode()
            except Exception as e:  # a bug must not take the server down: fail the running requests, go on
                log.exception("engine step failed; failing the running requests")
                for i, r in enumerate(self.slots):
                    if r is not None:
                        self._finish(i, r, "error", error=repr(e))

    @torch.inference_mode()
    def _prefill(self, slot: int, req: Request) -> None:
        req.sampler = RequestSampler(req.params, self.vocab, self.device)
        n = len(req.prompt_ids)
        x = torch.tensor([req.prompt_ids], device=self.device)
        logits = self.model(
            x, input_pos=torch.arange(n, device=self.device)[None], cache_rows=torch.tensor([slot], device=self.device)
        )[0, -1]
        req.pos = n
        self.stats["prefill_tokens"] += n
        self._accept(slot, req, logits)

    @torch.inference_mode()
    def _decode(self) -> None:
        rows = [i for i, r in enumerate(self.slots) if r is not None]
        reqs = [self.slots[i] for i in rows]
        x = torch.tensor([[r.out_ids[-1]] for r in reqs if r], device=self.device)
        pos = torch.tensor([[r.pos] for r in reqs if r], device=self.device)
        logits = self.model(x, input_pos=pos, cache_rows=torch.tensor(rows, device=self.device))[:, -1]
        self.stats["decode_steps"] += 1
        self.stats["decode_tokens"] += len(rows)
        for j, i in enumerate(rows):
            r = self.slots[i]
            if r is not None:
                r.pos += 1
                self._accept(i, r, logits[j])

    def _accept(self, slot: int, req: Request, logits: torch.Tensor) -> None:
        assert req.sampler is not None
        tok, lp, top = req.sampler(logits)
        if req.t_first is None:
            req.t_first = time.perf_counter()
        p = req.params
        if (tok in self.eos_ids and not p.ignore_eos) or tok in p.stop_token_ids:
            self._emit(req, self.tok.decode(req.out_ids, skip_special_tokens=True))  # what was held back
            self._finish(slot, req, "stop")
            return
        req.out_ids.append(tok)
        if lp is not None:
            req.pending_logprobs.append({"token_id": tok, "logprob": lp, "top": top or []})
        full = self.tok.decode(req.out_ids, skip_special_tokens=True)
        for s in p.stop:
            at = full.find(s, max(0, len(req.emitted) - len(s)))
            if at >= 0:
                self._emit(req, full[:at])
                self._finish(slot, req, "stop")
                return
        if len(req.out_ids) >= p.max_tokens or req.pos + 1 >= self.max_seq:
            self._emit(req, full)
            self._finish(slot, req, "length")
            return
        hold = max((len(s) - 1 for s in p.stop), default=0)
        safe = full.rstrip("\ufffd") if full.endswith("\ufffd") else full
        self._emit(req, safe[: len(safe) - hold] if hold else safe)

    def _emit(self, req: Request, text: str) -> None:
        delta = text[len(req.emitted) :] if text.startswith(req.emitted) else ""
        if delta or req.pending_logprobs:
            req.emitted += delta
            req.emit(Event("delta", delta, token_ids=list(req.out_ids[-1:]), logprobs=req.pending_logprobs))
            req.pending_logprobs = []

    def _usage(self, req: Request) -> dict[str, int]:
        return {
            "prompt_tokens": len(req.prompt_ids),
            "completion_tokens": len(req.out_ids),
            "total_tokens": len(req.prompt_ids) + len(req.out_ids),
        }

    def _finish(self, slot: int, req: Request, reason: str, error: str | None = None) -> None:
        self.slots[slot] = None
        if req.done:
            return
        req.done = True
        self.stats["finished"] += 1
        ev = Event("done", finish_reason=reason, usage=self._usage(req))
        if error:
            ev.text = ""
            ev.logprobs = [{"error": error}]
        req.emit(ev)


def check_done(ev: Event) -> None:
    """Raise Unavailable for a request that ended because no backend could serve it (before any token)."""
    if ev.kind == "done" and ev.finish_reason == "unavailable":
        raise Unavailable((ev.logprobs or [{}])[0].get("error", "no backend could serve the request"))


def check_request(prompt_ids: list[int], params: SamplingParams, max_seq: int, vocab: int) -> None:
    """Raise ValueError (a client error) for a request no backend can run: bad sampling values, an empty prompt,
    prompt + max_tokens past the context, token ids outside the vocabulary."""
    params.check()
    if not prompt_ids:
        raise ValueError("the prompt is empty")
    if len(prompt_ids) + params.max_tokens > max_seq:
        raise ValueError(
            f"prompt ({len(prompt_ids)} tokens) + max_tokens ({params.max_tokens}) exceeds the context length {max_seq}"
        )
    if any(not 0 <= t < vocab for t in [*prompt_ids, *params.stop_token_ids]):
        raise ValueError(f"token ids must be in [0, {vocab})")
