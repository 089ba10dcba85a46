"""The one interface every generation engine implements: `roost.infer.engine.Engine` (in process, continuous
batching) and `roost.infer.upstream.UpstreamEngine` (OpenAI-compatible upstream replicas). `roost serve`'s routes,
compose/reply, `/v1/ask` and query expansion are written against `GenerationEngine` only.

    engine = load_engine(ws, "smollm2").engine          # or load_upstream(ws, "smollm2", urls).engine
    req = engine.submit(prompt_ids, SamplingParams(max_tokens=60), on_event)   # events: "delta"…, then "done"
    text, done = engine.complete(prompt_ids, params)    # blocking helper
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from roost.infer.engine import Event, Request
    from roost.infer.sampling import SamplingParams
    from roost.infer.upstream import Upstream

UpstreamHook = Callable[[str, str, "float | None"], None]  # (upstream label, outcome, time to first token or None)


class GenerationEngine(Protocol):
    """What a generation backend offers the product layer. roost tokenises with the model folder's own tokenizer
    and chat template, so prompts are the same whichever engine generates."""

    tok: Any  # the model folder's tokenizer (`tokenizers.Tokenizer`)
    eos_ids: set[int]  # ids that end a turn
    max_seq: int  # the context length served (prompt + max_tokens must fit)
    max_queue: int  # requests waiting (or outstanding upstream) before `submit` raises QueueFull
    max_batch: int  # requests this process generates together (1 upstream: the replicas batch on their side)
    on_upstream: UpstreamHook | None  # told of every upstream request's outcome (metrics); never called in process

    def submit(self, prompt_ids: list[int], params: SamplingParams, emit: Callable[[Event], None]) -> Request:
        """Queue a request; `emit` gets its events on the engine's thread. Raises ValueError (a client error),
        QueueFull, EngineStopped, or Unavailable (no backend can serve it now)."""
        ...

    def queue_depth(self) -> int:
        """Requests submitted and not yet generating."""
        ...

    def active(self) -> int:
        """Requests generating now."""
        ...

    def kv_usage(self) -> float:
        """Share of KV-cache positions in use (0.0 where the cache lives elsewhere: the upstreams report it)."""
        ...

    def upstreams(self) -> Sequence[Upstream]:
        """The replicas generating for this engine, for per-upstream metrics; empty for the in-process engine."""
        ...

    def run(self) -> None:
        """Drive the engine from the calling thread (the server's main thread) until `shutdown()`."""
        ...

    def shutdown(self, drain_timeout: float = 10.0) -> None:
        """Stop taking requests; waiting ones finish with "shutdown"; running ones get `drain_timeout` seconds."""
        ...

    def complete(self, prompt_ids: list[int], params: SamplingParams, timeout: float = 600) -> tuple[str, Event]:
        """Blocking: the whole text and the final event."""
        q: queue.Queue[Event] = queue.Queue()
        self.submit(prompt_ids, params, q.put)
        parts = []
        deadline = time.monotonic() + timeout
        while True:
            ev = q.get(timeout=max(0.1, deadline - time.monotonic()))
            parts.append(ev.text)
            if ev.kind == "done":
                return "".join(parts), ev
