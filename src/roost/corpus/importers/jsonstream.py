"""Tolerant, streaming JSON readers for exports: arrays (plain, `window.YTD… = [`, or under a key) and JSONL.

Used by every JSON importer of `roost ingest`. A file is read in chunks, never whole; each element is decoded on
its own (the stdlib's C decoder), so a bad record costs only that record, and a truncated file keeps every complete
record before the cut. Non-UTF-8 bytes are carried as lone surrogates and rejected later, per record and field, by
the cleaner.

Budgets (`limits.Limits`): an element larger than `max_record_bytes` is refused once that much of it is buffered
and the rest of it is skipped without being kept (a structural scan: strings, brackets); an element nested deeper
than `max_depth` is refused (the C decoder's own recursion guard stops far deeper ones). Memory is bounded by the
record budget plus one read chunk, whatever the file. A `StreamError` from the stream (a member budget, a damaged
archive) ends the file with one BadRecord; the records before it are kept.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from roost.corpus.importers.limits import DEFAULT, Limits, StreamError, deep_message, size, too_deep
from roost.corpus.post import BadRecord
from roost.errors import FormatError

CHUNK = 1 << 22  # 4 MiB of bytes per read
_NEAR_END = 8  # a decode error this close to the end of the buffer may be a record cut by the chunk boundary
_DECODER = json.JSONDecoder(strict=False)  # raw control characters inside strings are the cleaner's business
_WS = re.compile(r"[ \t\r\n]*")
_RESYNC = re.compile(r"\}\s*,\s*(?=\{)")
_OUTSIDE = re.compile(r'"|[\[{]+|[\]}]+|,')  # structure outside strings (runs of brackets at once)
_INSIDE = re.compile(r'["\\]')  # the end of a string, or an escape


@dataclass(slots=True)
class Item:
    index: int
    value: Any
    where: str  # how a message names this record: "#3" in an array, "line 7" in JSONL


class _Buffer:
    """Decoded text of a binary stream, read on demand; text before `pos` is dropped at the next fill."""

    def __init__(self, fp: IO[bytes]):
        self.fp = fp
        self.dec = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
        self.text = ""
        self.pos = 0
        self.dropped = 0  # characters dropped so far (the file offset of text[0], in characters)
        self.eof = False
        self.first = True

    def fill(self) -> bool:
        """Read one more chunk; drop what has been consumed. False at end of file. May raise StreamError."""
        if self.eof:
            return False
        raw = self.fp.read(CHUNK)
        if not raw:
            self.eof = True
            tail = self.dec.decode(b"", final=True)
        else:
            tail = self.dec.decode(raw)
        if self.first:
            tail = tail.lstrip("\ufeff")
            self.first = False
        self.dropped += self.pos
        self.text = self.text[self.pos :] + tail
        self.pos = 0
        return True

    def skip_ws(self) -> str:
        """Skip white space; return the next character ('' at end of file)."""
        while True:
            self.pos = _WS.match(self.text, self.pos).end()  # type: ignore[union-attr]
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self.fill():
                return ""


def _find_array_start(buf: _Buffer, filename: str, key: str | None, budget: int) -> str | None:
    """Position buf just after the '[' that opens the records: plain array, `window.YTD.x.partN = [`, or `"key": [`.
    Returns a message when the key is not found within the record budget; FormatError when the file has none."""
    while len(buf.text) < 1 << 16 and buf.fill():
        pass
    head = buf.text
    c = buf.skip_ws()
    if c == "[":
        buf.pos += 1
        return None
    if head.lstrip().startswith("window.YTD"):
        eq = head.find("=")
        br = head.find("[", eq)
        if eq < 0 or br < 0:
            raise FormatError(f"{filename}: X archive file without '= [' after window.YTD…")
        buf.pos = br + 1
        return None
    if key is not None and c == "{":
        pattern = re.compile(rf'"{re.escape(key)}"\s*:\s*\[')
        while True:
            m = pattern.search(buf.text, buf.pos)
            if m is not None:
                buf.pos = m.end()
                return None
            if buf.dropped + len(buf.text) > budget:
                return f"no '{key}' array within the first {size(budget)} (budget per record); file not read"
            buf.pos = max(buf.pos, len(buf.text) - len(key) - 64)  # keep a tail: the key may straddle chunks
            if not buf.fill():
                raise FormatError(f"{filename}: no '{key}' array found")
    what = "empty file" if c == "" else f"starts with {head.lstrip()[:20]!r}"
    raise FormatError(f"{filename}: expected a JSON array of records ({what})")


def _skip_element(buf: _Buffer) -> bool:
    """Move buf.pos past the element that starts there (a structural scan over strings and brackets that drops
    what it has passed, so an element of any size costs one chunk of memory). False at end of file."""
    depth, in_str, p = 0, False, buf.pos
    while True:
        text = buf.text
        m = (_INSIDE if in_str else _OUTSIDE).search(text, p)
        if m is None or (in_str and m.group() == "\\" and m.end() >= len(text)):
            buf.pos = len(text) if m is None else m.start()  # keep a backslash cut from what it escapes
            if not buf.fill():
                return False
            p = buf.pos
            continue
        tok, p = m.group(), m.end()
        if in_str:
            if tok == '"':
                in_str = False
            else:
                p += 1  # the escaped character
        elif tok == '"':
            in_str = True
        elif tok == ",":
            if depth == 0:
                buf.pos = m.start()
                return True
        elif tok[0] in "[{":
            depth += len(tok)
        elif depth == 0 or len(tok) >= depth:  # closes this element (the rest closes the records array)
            buf.pos = m.start() + depth
            return True
        else:
            depth -= len(tok)


def _resync(buf: _Buffer, start: int) -> bool:
    """After an invalid element: skip to the next top-level-looking record ('}, {') from `start`, dropping what is
    passed. False when there is none."""
    p = start
    while True:
        m = _RESYNC.search(buf.text, p)
        if m:
            buf.pos = m.end()
            return True
        buf.pos = max(buf.pos, len(buf.text) - 64)  # keep a tail: the separator may straddle chunks
        if not buf.fill():
            return False
        p = buf.pos


def _depth_over(text: str, start: int, end: int, value: Any, limit: int) -> bool:
    # Counting brackets is cheap and bounds the depth from above; walk the value only when it might be deep.
    return text.count("[", start, end) + text.count("{", start, end) > limit and too_deep(value, limit)


def _next_element(buf: _Buffer, limits: Limits) -> tuple[str, Any, bool]:
    """Decode the element at buf.pos: ("ok", value, more) | ("bad", message, more) | ("cut", None, False) when
    the file ends inside it. `more` is False when nothing can be read after it."""
    deep = deep_message(limits.max_depth)
    while True:
        start = buf.pos
        try:
            value, end = _DECODER.raw_decode(buf.text, start)
        except json.JSONDecodeError as e:
            near_end = len(buf.text) - e.pos <= _NEAR_END or e.msg.startswith("Unterminated string")
            if not buf.eof and near_end:  # the element may continue in the next chunk
                if len(buf.text) - start > limits.max_record_bytes:
                    why = f"record larger than {size(limits.max_record_bytes)} (budget per record); skipped"
                    return "bad", why, _skip_element(buf)
                buf.fill()
                continue
            if buf.eof and (e.pos >= len(buf.text) - 1 or e.msg.startswith("Unterminated string")):
                return "cut", None, False
            why = f"invalid JSON: {e.msg} (character {e.pos - start} of the record)"
            return "bad", why, _resync(buf, e.pos)
        except RecursionError:
            return "bad", deep, _skip_element(buf)
        except ValueError as e:  # e.g. an integer over Python's 4300-digit limit
            return "bad", str(e)[:200], _skip_element(buf)
        if end == len(buf.text) and not buf.eof and isinstance(value, (int, float)):
            buf.fill()  # a number cut by the chunk boundary: decode it again whole
            continue
        buf.pos = end
        if end - start > limits.max_record_bytes:
            return "bad", f"record larger than {size(limits.max_record_bytes)} (budget per record)", True
        if _depth_over(buf.text, start, end, value, limits.max_depth):
            return "bad", deep, True
        return "ok", value, True


def _fast(buf: _Buffer, limits: Limits) -> tuple[bool, Any]:
    """The common case, decoded in place: (True, value) for a complete element within the budgets, buf.pos past
    it; (False, None) for anything else (left to _next_element, which decodes it again and says why)."""
    start = buf.pos
    try:
        value, end = _DECODER.raw_decode(buf.text, start)
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
        return False, None
    if end == len(buf.text) or end - start > limits.max_record_bytes:  # maybe cut by the chunk, or too large
        return False, None
    if _depth_over(buf.text, start, end, value, limits.max_depth):
        return False, None
    buf.pos = end
    return True, value


def iter_json_array(
    fp: IO[bytes], filename: str, key: str | None = None, limits: Limits = DEFAULT
) -> Iterator[Item | BadRecord]:
    """Yield each element of the records array as Item(index, value); a bad element as BadRecord; never raise
    for a bad element (FormatError only when the file has no array at all)."""
    buf = _Buffer(fp)
    index = 0
    try:
        problem = _find_array_start(buf, filename, key, limits.max_record_bytes)
        if problem is not None:
            yield BadRecord(filename, "#0", None, problem)
            return
        while True:
            c = buf.skip_ws()
            if c == "":
                yield BadRecord(
                    filename,
                    f"#{index}",
                    None,
                    "file is truncated: the records array never closes "
                    f"(the {index} complete record(s) before the cut are kept)",
                )
                return
            if c == "]":
                return
            if c == ",":  # tolerate a stray or trailing comma
                buf.pos += 1
                continue
            ok, value = _fast(buf, limits)
            kind, more = "ok", True
            if not ok:
                kind, value, more = _next_element(buf, limits)
            if kind == "cut":
                yield BadRecord(
                    filename,
                    f"#{index}",
                    None,
                    f"file is truncated inside this record (the {index} complete record(s) before it are kept)",
                )
                return
            yield Item(index, value, f"#{index}") if kind == "ok" else BadRecord(filename, f"#{index}", None, value)
            index += 1
            if not more:
                return
            if kind != "ok":  # buf is at the separator after a skipped element, or at the next record
                continue
            c = buf.skip_ws()
            if c == ",":
                buf.pos += 1
            elif c not in ("]", ""):
                yield BadRecord(
                    filename, f"#{index}", None, f"invalid JSON: expected ',' or ']' after record #{index - 1}"
                )
                if not _resync(buf, buf.pos):
                    return
    except StreamError as e:
        yield BadRecord(filename, f"#{index}", None, f"{e} (the {index} complete record(s) before it are kept)")


def iter_jsonl(fp: IO[bytes], filename: str, limits: Limits = DEFAULT) -> Iterator[Item | BadRecord]:
    """One JSON value per line; blank lines skipped; the index is the 1-based line number. A line longer than the
    record budget is refused after reading that much of it, and the rest of the line is skipped unread."""
    budget = limits.max_record_bytes
    lineno = 0
    try:
        while True:
            raw = fp.readline(budget + 1)
            if not raw:
                return
            lineno += 1
            if len(raw) > budget and not raw.endswith(b"\n"):
                while (more := fp.readline(CHUNK)) and not more.endswith(b"\n"):
                    pass
                why = f"line longer than {size(budget)} (budget per record); skipped"
                yield BadRecord(filename, f"line {lineno}", None, why)
                continue
            item = _jsonl_line(raw, lineno, filename, limits.max_depth)
            if item is not None:
                yield item
    except StreamError as e:
        yield BadRecord(filename, f"line {lineno + 1}", None, f"{e} (the lines before it are kept)")


def _jsonl_line(raw: bytes, lineno: int, filename: str, max_depth: int) -> Item | BadRecord | None:
    """One line of JSONL (None for a blank line)."""
    where = f"line {lineno}"
    if lineno == 1:
        raw = raw.removeprefix(codecs.BOM_UTF8)
    try:
        line = raw.decode("utf-8").strip()
    except UnicodeDecodeError as e:
        return BadRecord(filename, where, None, f"not valid UTF-8 (byte {e.start + 1} of the line)")
    if not line:
        return None
    deep = deep_message(max_depth)
    try:
        value, end = _DECODER.raw_decode(line)
        if line[end:].strip():
            raise json.JSONDecodeError("extra data after the value", line, end)
    except json.JSONDecodeError as e:
        return BadRecord(filename, where, None, f"invalid JSON: {e.msg} (column {e.pos + 1})")
    except RecursionError:
        return BadRecord(filename, where, None, deep)
    except ValueError as e:  # e.g. an integer over Python's 4300-digit limit
        return BadRecord(filename, where, None, str(e)[:200])
    if _depth_over(line, 0, len(line), value, max_depth):
        return BadRecord(filename, where, None, deep)
    return Item(lineno, value, where)
