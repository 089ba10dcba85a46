"""Chat prompts from the model's own chat template (`tokenizer_config.json` → `chat_template`, a Jinja template as
in transformers); ChatML when a model has none. Used by the server, compose/reply, ask and query expansion.

A model's template is code written by whoever made the model, so it renders in Jinja's immutable sandbox inside
a separate worker process with budgets: RENDER_SECONDS of time (the worker is killed and restarted past it),
RENDER_MEMORY bytes of address space, and RENDER_MAX_CHARS of output. A template that loops for ever, builds a huge
string or raises is a ValueError naming the template (a 400 from the API); the server's event loop, `/health` and
SIGTERM are never held by it (the API calls `render` from a worker thread). roost's own ChatML renders in process.
A reply's length is checked before it is read, and the worker is killed and restarted after any failure that could
leave its pipe out of step (see `_Worker`).

    t = ChatTemplate(tokenizer_config["chat_template"], tokenizer_config, origin="models/x/tokenizer_config.json")
    t.render([{"role": "user", "content": "hi"}])
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import select
import struct
import threading
import time
from collections.abc import Callable
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
REPLY_MAX_BYTES = 4 * RENDER_MAX_CHARS + 4096  # one reply frame from the worker, at most (checked before reading)
_FRAME = struct.Struct("!Q")  # a reply frame's header: the length of the JSON that follows


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
        self.from_model = bool(template)  # the model folder has its own template (not roost's ChatML fallback)
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


class _Desync(Exception):
    """The worker's reply is not one well-formed frame within its budgets: the pipe may be out of step."""


class _Worker:
    """One process rendering one template. Replies travel as length-prefixed JSON frames (no pickle), each read with
    its declared length checked against REPLY_MAX_BYTES before any of it is buffered and all of it within the
    render's deadline. After anything that may leave the pipe out of step (a timeout, a reply over budget or not
    one well-formed frame, the worker's death) the worker is killed; the next render starts a fresh one. A template
    that cannot compile is remembered as broken. `serve` is the worker's code (`_serve`)."""

    def __init__(self, source: str, special: dict[str, str], serve: Callable[..., None] | None = None):
        self.source, self.special = source, special
        self.serve = serve or _serve
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
            target=self.serve, args=(child, self.source, self.special), daemon=True, name="roost-chat-template"
        )
        self.proc.start()
        child.close()
        self.conn = parent
        # the interpreter's start-up and the template's compile each have a deadline (Jinja folds constant output
        # while compiling, so a template can make its compile slow)
        for stage, seconds in (("start", START_SECONDS), ("compile", COMPILE_SECONDS)):
            try:
                ok, msg = _reply(parent, seconds)
            except _Desync as e:
                self._stop()
                raise ValueError(f"{origin}: {str(e).replace('rendering took', f'{stage} took')}") from None
            if not ok:
                self._stop()
                if stage == "compile":
                    self.broken = msg
                raise ValueError(f"{origin}: {msg}")
        return parent

    def _stop(self) -> None:
        if self.conn is not None:
            self.conn.close()
        if self.proc is not None:
            self.proc.kill()
            self.proc.join(timeout=5)
        self.proc = self.conn = None

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool, origin: str) -> str:
        with self.lock:
            conn = self.conn
            if conn is None or self.proc is None or not self.proc.is_alive():
                self._stop()
                conn = self._start(origin)
            try:
                conn.send_bytes(json.dumps([messages, add_generation_prompt]).encode("utf-8", "surrogatepass"))
                ok, out = _reply(conn, RENDER_SECONDS)
            except (OSError, _Desync) as e:  # the pipe may hold the rest of a reply: never read from it again
                self._stop()
                raise ValueError(
                    f"{origin}: {e if isinstance(e, _Desync) else 'the template worker is gone'}"
                ) from None
            if not ok:
                raise ValueError(f"{origin}: {out}")
            return out


def _read_exact(fd: int, n: int, deadline: float) -> bytes:
    """Exactly n bytes from fd by `deadline` (TimeoutError), or EOFError when the other end closes first."""
    buf = bytearray()
    ready = select.poll()  # not select(): a server's descriptors can be past FD_SETSIZE
    ready.register(fd, select.POLLIN)
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0 or not ready.poll(left * 1000):
            raise TimeoutError
        chunk = os.read(fd, min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def _reply(conn: Connection, seconds: float) -> tuple[bool, str]:
    """One reply frame, whole within `seconds`: (ok, text). _Desync when it is late, over REPLY_MAX_BYTES (known
    from its header, before any of it is read), cut short or not `[bool, str]` JSON."""
    deadline = time.monotonic() + seconds
    try:
        (size,) = _FRAME.unpack(_read_exact(conn.fileno(), _FRAME.size, deadline))
        if size > REPLY_MAX_BYTES:
            raise _Desync(f"the template worker sent a reply of {size:,} bytes, over the {REPLY_MAX_BYTES:,} budget")
        raw = _read_exact(conn.fileno(), size, deadline)
    except TimeoutError:
        raise _Desync(
            f"rendering took longer than {seconds:g} s and was stopped (the template loops too much)"
        ) from None
    except (EOFError, OSError) as e:  # died (memory budget)
        raise _Desync(f"the template worker failed ({type(e).__name__}: over its memory budget?)") from None
    try:
        ok, msg = json.loads(raw)
    except (ValueError, TypeError):
        raise _Desync("the template worker sent a reply that is not [ok, text] JSON") from None
    if not isinstance(ok, bool) or not isinstance(msg, str):
        raise _Desync("the template worker sent a reply that is not [ok, text] JSON")
    return ok, msg


def _send(conn: Connection, ok: bool, value: str) -> None:
    """One reply frame: its length (_FRAME), then `[ok, value]` as JSON; a reply over REPLY_MAX_BYTES is replaced
    by an error saying so (the parent would refuse it)."""
    data = json.dumps([ok, value if ok else value[:500]], ensure_ascii=False).encode("utf-8", "surrogatepass")
    if len(data) > REPLY_MAX_BYTES:
        why = f"the rendered prompt is {len(data):,} bytes as JSON, over the {REPLY_MAX_BYTES:,}-byte budget"
        data = json.dumps([False, why]).encode()
    view = memoryview(_FRAME.pack(len(data)) + data)
    while view:
        view = view[os.write(conn.fileno(), view) :]


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
