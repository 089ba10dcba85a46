"""The chat-template worker stays in step with its parent: after any render that fails in a way that could leave
the pipe out of step (a reply over budget, a timeout, a reply that is not one well-formed frame), the worker is
killed and the next render starts a fresh one; every reply is read with its length checked before any of it is
buffered, and the whole reply within the render's deadline.

Attacks and outcomes:
- issue 24 #8: a template whose output is under the 4 Mi-character limit but whose JSON reply is over the 16 MiB
  read limit (each '\\x01' is 6 bytes escaped): the parent refused the reply but left its bytes in the pipe, and
  every later render of that template failed until restart. Now the worker measures its reply and answers with a
  clear error instead; the next render of the same template works (`test_oversized_reply_then_normal_render`).
- a render past the time budget: the worker is killed; the next render works (`test_timeout_then_normal_render`).
- a worker that no longer follows the protocol (a template that escaped the sandbox): a header declaring 1 TiB,
  a reply that stops half-way, bytes that are not JSON, JSON of the wrong shape. Each is a ValueError naming the
  template within the deadline, nothing over the budget is read, and that worker process is killed
  (`test_hostile_worker_is_killed`). These run a real process speaking the real frames, standing in for a
  sandbox escape, which the tests cannot produce.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

import pytest

from roost.infer.chat import _FRAME, RENDER_MAX_CHARS, RENDER_SECONDS, REPLY_MAX_BYTES, ChatTemplate, _send, _Worker

MSGS = [{"role": "user", "content": "hi"}]


def test_oversized_reply_then_normal_render() -> None:
    n = RENDER_MAX_CHARS - 10  # under the character limit; its JSON (6 bytes per '\x01') is over the read limit
    assert 6 * n > REPLY_MAX_BYTES
    source = "{% if messages[0]['role'] == 'big' %}{{ messages[0]['content'] * " + str(n) + " }}"
    source += "{% else %}<{{ messages[0]['content'] }}>{% endif %}"
    t = ChatTemplate(source, origin="models/evil-json/tokenizer_config.json")
    assert t.render(MSGS) == "<hi>"
    with pytest.raises(ValueError) as e:
        t.render([{"role": "big", "content": "\x01"}])
    assert "evil-json" in str(e.value) and "over" in str(e.value), str(e.value)
    for _ in range(3):  # the same worker's pipe is in step: every later render works
        assert t.render(MSGS) == "<hi>"


def test_timeout_then_normal_render() -> None:
    loop = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
    source = "{% if messages[0]['role'] == 'loop' %}" + loop + "{% endif %}<{{ messages[0]['content'] }}>"
    t = ChatTemplate(source, origin="models/evil-loop/tokenizer_config.json")
    assert t.render(MSGS) == "<hi>"
    with pytest.raises(ValueError, match="evil-loop.*longer than"):
        t.render([{"role": "loop", "content": "x"}])
    assert t.render(MSGS) == "<hi>"


# -- workers that break the protocol (module level: the spawned process imports them by name) --------------------


def _ready(conn: Connection) -> None:
    _send(conn, True, "started")
    _send(conn, True, "ready")
    conn.recv_bytes()  # the first render request


def _huge_header(conn: Connection, source: str, special: dict) -> None:
    _ready(conn)
    os.write(conn.fileno(), _FRAME.pack(1 << 40))
    time.sleep(60)


def _half_reply(conn: Connection, source: str, special: dict) -> None:
    _ready(conn)
    os.write(conn.fileno(), _FRAME.pack(100) + b'[true, "')
    time.sleep(60)


def _not_json(conn: Connection, source: str, special: dict) -> None:
    _ready(conn)
    os.write(conn.fileno(), _FRAME.pack(4) + b"\xff\xfe{[")
    time.sleep(60)


def _wrong_shape(conn: Connection, source: str, special: dict) -> None:
    _ready(conn)
    os.write(conn.fileno(), _FRAME.pack(8) + b'{"a": 1}')
    time.sleep(60)


@pytest.mark.parametrize("serve", [_huge_header, _half_reply, _not_json, _wrong_shape], ids=lambda f: f.__name__)
def test_hostile_worker_is_killed(serve: Callable[..., None]) -> None:
    w = _Worker("x", {}, serve=serve)
    before = set(mp.active_children())
    t0 = time.monotonic()
    with pytest.raises(ValueError, match="evil/tpl"):
        w.render(MSGS, True, "evil/tpl")
    assert time.monotonic() - t0 < RENDER_SECONDS + 10  # the worker's start-up included
    assert set(mp.active_children()) <= before  # that worker was killed, not left writing into the pipe
    assert w.proc is None and w.conn is None  # the next render starts a fresh worker
