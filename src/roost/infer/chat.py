"""Chat prompts from the model's own chat template (`tokenizer_config.json` → `chat_template`, a Jinja template as
in transformers); ChatML when a model has none. Used by the server, compose/reply, ask and query expansion.

A model's template is code written by whoever made the model, so it renders in Jinja's immutable sandbox inside
a separate worker process with budgets: RENDER_SECONDS of time (the worker is killed and restarted past it),
RENDER_MEMORY bytes of address space, and RENDER_MAX_CHARS of output. A template that loops for ever, builds a huge
string or raises is a ValueError naming the template (a 400 from the API); the server's event loop, `/health` and
SIGTERM are never held by it (the API calls `render` from a worker thread). roost's own ChatML renders in process.

    t = ChatTemplate(tokenizer_config["chat_template"], tokenizer_config, origin="models/x/tokenizer_config.json")
    t.render([{"role": "user", "content": "hi"}])
"""

from __future__ import annotations

import json
import multiprocessing as mp
import threading
from multiprocessing.connection import Connection
from typing import Any

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from roost.errors import RoostError

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
RENDER_SECONDS = 2.0
RENDER_MEMORY = 1 << 30
RENDER_MAX_CHARS = 4 << 20
START_SECONDS = 60.0
COMPILE_SECONDS = 10.0  # Jinja folds constant output while compiling: a template can make that slow, so it is bounded
REPLY_MAX_BYTES = 4 * RENDER_MAX_CHARS + 4096  # what the parent reads back from the worker, at most


def _environment() -> ImmutableSandboxedEnvironment:
    # optimized=False: Jinja's optimizer folds constant expressions while compiling ('x' * 10**10 would be built
    # then, outside any budget); unoptimised, every expression is evaluated at render time, in the worker
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, optimized=False)

    def raise_exception(msg: str) -> None:
        raise TemplateError(msg)

    env.globals["raise_exception"] = raise_exception
    return env


class ChatTemplate:
    """A chat template: ChatML (roost's own, rendered here) or a model's (rendered by a budgeted worker)."""

    def __init__(self, template: Any, special: dict[str, Any] | None = None, origin: str = ""):
        if isinstance(template, list):  # HF's named templates: [{"name": "default", "template": "..."}, ...]
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default", next(iter(named.values()), None))
        if template is not None and not isinstance(template, str):
            raise RoostError(f"{origin or 'the model'}: chat_template must be a string (or HF's list of named ones)")
        self.source = template or CHATML
        self.trusted = template is None
        self.origin = origin or ("ChatML" if self.trusted else "the model's chat_template")
        try:  # a model's template is only parsed here (no constant folding, nothing runs); the worker compiles it
            env = _environment()
            env.parse(self.source)
            self.template = env.from_string(CHATML) if self.trusted else None
        except TemplateError as e:
            raise RoostError(f"{self.origin}: the chat template does not parse: {e}") from None
        except RecursionError:
            raise RoostError(f"{self.origin}: the chat template is nested too deeply to parse") from None
        self.special = {k: v for k, v in (special or {}).items() if k.endswith("_token") and isinstance(v, str)}

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """Raises ValueError (a client error) when the template rejects the conversation or breaks a budget."""
        if self.template is not None:
            try:
                return self.template.render(messages=messages, add_generation_prompt=add_generation_prompt)
            except TemplateError as e:
                raise ValueError(f"{self.origin}: the chat template rejected these messages: {e}") from None
        return _worker(self.source, self.special).render(messages, add_generation_prompt, self.origin)


_workers: dict[tuple[str, tuple[tuple[str, str], ...]], _Worker] = {}
_workers_lock = threading.Lock()


def _worker(source: str, special: dict[str, str]) -> _Worker:
    key = (source, tuple(sorted(special.items())))
    with _workers_lock:
        if key not in _workers:
            _workers[key] = _Worker(source, special)
        return _workers[key]


class _Worker:
    """One process rendering one template, restarted after it breaks the time budget (or dies). Replies travel as
    JSON bytes of bounded length (no pickle); a template that cannot compile is remembered as broken."""

    def __init__(self, source: str, special: dict[str, str]):
        self.source, self.special = source, special
        self.lock = threading.Lock()
        self.proc: Any = None
        self.conn: Connection | None = None
        self.broken = ""

    def _start(self, origin: str) -> Connection:
        if self.broken:
            raise ValueError(f"{origin}: {self.broken}")
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=_serve, args=(child, self.source, self.special), daemon=True, name="roost-chat-template"
        )
        self.proc.start()
        child.close()
        self.conn = parent
        # the interpreter's start-up and the template's compile each have a deadline (Jinja folds constant output
        # while compiling, so a template can make its compile slow)
        for stage, seconds in (("start", START_SECONDS), ("compile", COMPILE_SECONDS)):
            ok, msg = self._reply(parent, seconds, origin)
            if not ok:
                self._stop()
                if stage == "compile" and not msg.startswith("rendering took"):
                    self.broken = msg
                raise ValueError(f"{origin}: {msg.replace('rendering took', f'{stage} took')}")
        return parent

    def _reply(self, conn: Connection, seconds: float, origin: str) -> tuple[bool, str]:
        try:
            if not conn.poll(seconds):
                return False, f"rendering took longer than {seconds:g} s and was stopped (the template loops too much)"
            raw = conn.recv_bytes(maxlength=REPLY_MAX_BYTES)
        except (EOFError, OSError, BrokenPipeError) as e:  # died (memory budget), or a reply over the cap
            return False, f"the template worker failed ({type(e).__name__}: over its memory or output budget?)"
        ok, msg = json.loads(raw)
        return bool(ok), str(msg)

    def _stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.join(timeout=5)
        self.proc = self.conn = None

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool, origin: str) -> str:
        with self.lock:
            conn = self.conn
            if conn is None or self.proc is None or not self.proc.is_alive():
                conn = self._start(origin)
            try:
                conn.send_bytes(json.dumps([messages, add_generation_prompt]).encode("utf-8", "surrogatepass"))
            except (OSError, BrokenPipeError):
                self._stop()
                raise ValueError(f"{origin}: the template worker is gone; try again") from None
            ok, out = self._reply(conn, RENDER_SECONDS, origin)
            if not ok:
                if self.proc is not None and (out.startswith("rendering took") or not self.proc.is_alive()):
                    self._stop()
                raise ValueError(f"{origin}: {out}")
            return out


def _send(conn: Connection, ok: bool, value: str) -> None:
    conn.send_bytes(json.dumps([ok, value if ok else value[:500]]).encode("utf-8", "surrogatepass"))


def _serve(conn: Connection, source: str, special: dict[str, str]) -> None:
    """The worker: capped address space, the sandbox, one render per message until the pipe closes."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (RENDER_MEMORY, RENDER_MEMORY))
    _send(conn, True, "started")
    try:
        template = _environment().from_string(source)
    except MemoryError:
        return _send(conn, False, f"the chat template needed more than {RENDER_MEMORY >> 20} MiB to compile")
    except Exception as e:  # noqa: BLE001 — SyntaxError ("too many statically nested blocks"), RecursionError...
        return _send(conn, False, f"the chat template does not compile: {type(e).__name__}: {e}")
    _send(conn, True, "ready")
    while True:
        try:
            messages, agp = json.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        try:
            out = template.render(messages=messages, add_generation_prompt=agp, **special)
            if len(out) > RENDER_MAX_CHARS:
                _send(conn, False, f"the rendered prompt is over {RENDER_MAX_CHARS:,} characters")
            else:
                _send(conn, True, out)
        except TemplateError as e:
            _send(conn, False, f"the chat template rejected these messages: {e}")
        except MemoryError:
            _send(conn, False, f"the chat template needed more than {RENDER_MEMORY >> 20} MiB")
        except Exception as e:  # noqa: BLE001 — a template error of any kind is the template's, not the server's
            _send(conn, False, f"the chat template failed: {type(e).__name__}: {e}")
