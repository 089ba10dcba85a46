"""Tolerant, streaming JSON readers for exports: arrays (plain, `window.YTD… = [`, or under a key) and JSONL.

Used by every JSON importer of `roost ingest`. A file is read in chunks, never whole; each element is decoded on
its own, so a bad record costs only that record, and a truncated file keeps every complete record before the
cut. Non-UTF-8 bytes are carried as lone surrogates and rejected later, per record and field, by the cleaner.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from roost.corpus.post import BadRecord
from roost.errors import FormatError

CHUNK = 1 << 22  # 4 MiB of bytes per read
MAX_RECORD_CHARS = 64 << 20  # one JSON element larger than this is refused without reading it all
_DECODER = json.JSONDecoder(strict=False)  # raw control characters inside strings are the cleaner's business
_WS = re.compile(r"[ \t\r\n]*")
_RESYNC = re.compile(r"\}\s*,\s*(?=\{)")


@dataclass(slots=True)
class Item:
    index: int
    value: Any
    where: str  # how a message names this record: "#3" in an array, "line 7" in JSONL


class _Buffer:
    """Decoded text of a binary stream, read on demand."""

    def __init__(self, fp: IO[bytes]):
        self.fp = fp
        self.dec = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
        self.text = ""
        self.pos = 0
        self.eof = False
        self.first = True

    def fill(self) -> bool:
        """Read one more chunk; drop what has been consumed. False at end of file."""
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


def _find_array_start(buf: _Buffer, filename: str, key: str | None) -> None:
    """Position buf just after the '[' that opens the records: plain array, `window.YTD.x.partN = [`, or `"key": [`."""
    while len(buf.text) < 1 << 16 and buf.fill():
        pass
    head = buf.text
    c = buf.skip_ws()
    if c == "[":
        buf.pos += 1
        return
    if head.lstrip().startswith("window.YTD"):
        eq = head.find("=")
        br = head.find("[", eq)
        if eq < 0 or br < 0:
            raise FormatError(f"{filename}: X archive file without '= [' after window.YTD…")
        buf.pos = br + 1
        return
    if key is not None and c == "{":
        m = re.search(rf'"{re.escape(key)}"\s*:\s*\[', buf.text)
        while m is None and buf.fill():
            m = re.search(rf'"{re.escape(key)}"\s*:\s*\[', buf.text)
        if m is None:
            raise FormatError(f"{filename}: no '{key}' array found")
        buf.pos = m.end()
        return
    what = "empty file" if c == "" else f"starts with {head.lstrip()[:20]!r}"
    raise FormatError(f"{filename}: expected a JSON array of records ({what})")


def iter_json_array(fp: IO[bytes], filename: str, key: str | None = None) -> Iterator[Item | BadRecord]:
    """Yield each element of the records array as Item(index, value); a bad element as BadRecord; never raise
    for a bad element (FormatError only when the file has no array at all)."""
    buf = _Buffer(fp)
    _find_array_start(buf, filename, key)
    index = 0
    last_err: tuple[int, str] | None = None
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
        try:
            value, end = _DECODER.raw_decode(buf.text, buf.pos)
        except json.JSONDecodeError as e:
            err = (e.pos - buf.pos, e.msg)
            # More data may complete the record: retry after each chunk until the error stops moving.
            if not buf.eof and (err != last_err or e.msg.startswith("Unterminated string")):
                if len(buf.text) - buf.pos > MAX_RECORD_CHARS:
                    yield BadRecord(filename, f"#{index}", None, f"record larger than {MAX_RECORD_CHARS} characters")
                    last_err = None
                    index += 1
                    if not _resync(buf):
                        return
                    continue
                last_err = err
                buf.fill()
                continue
            last_err = None
            if buf.eof and e.pos >= len(buf.text) - 1 or e.msg.startswith("Unterminated string") and buf.eof:
                yield BadRecord(
                    filename,
                    f"#{index}",
                    None,
                    f"file is truncated inside this record (the {index} complete record(s) before it are kept)",
                )
                return
            yield BadRecord(filename, f"#{index}", None, f"invalid JSON: {e.msg} (character {err[0]} of the record)")
            index += 1
            if not _resync(buf):
                return
            continue
        except (RecursionError, ValueError) as e:  # ValueError: e.g. an integer over Python's 4300-digit limit
            why = "record nested too deeply (over ~1000 levels)" if isinstance(e, RecursionError) else str(e)[:200]
            yield BadRecord(filename, f"#{index}", None, why)
            last_err = None
            index += 1
            if not _resync(buf):
                return
            continue
        last_err = None
        yield Item(index, value, f"#{index}")
        index += 1
        buf.pos = end
        c = buf.skip_ws()
        if c == ",":
            buf.pos += 1
        elif c not in ("]", ""):
            yield BadRecord(filename, f"#{index}", None, f"invalid JSON: expected ',' or ']' after record #{index - 1}")
            if not _resync(buf):
                return


def _resync(buf: _Buffer) -> bool:
    """Skip to the start of the next top-level-looking record ('}, {'). False when there is none."""
    while True:
        m = _RESYNC.search(buf.text, buf.pos)
        if m:
            buf.pos = m.end()
            return True
        if not buf.fill():
            return False


def iter_jsonl(fp: IO[bytes], filename: str) -> Iterator[Item | BadRecord]:
    """One JSON value per line; blank lines skipped; the index is the 1-based line number."""
    for lineno, raw in enumerate(fp, 1):
        if lineno == 1:
            raw = raw.removeprefix(codecs.BOM_UTF8)
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError as e:
            yield BadRecord(filename, f"line {lineno}", None, f"not valid UTF-8 (byte {e.start + 1} of the line)")
            continue
        if not line:
            continue
        if len(line) > MAX_RECORD_CHARS:
            yield BadRecord(filename, f"line {lineno}", None, f"line longer than {MAX_RECORD_CHARS} characters")
            continue
        try:
            value, end = _DECODER.raw_decode(line)
            if line[end:].strip():
                raise json.JSONDecodeError("extra data after the value", line, end)
        except json.JSONDecodeError as e:
            yield BadRecord(filename, f"line {lineno}", None, f"invalid JSON: {e.msg} (column {e.pos + 1})")
            continue
        except (RecursionError, ValueError) as e:  # ValueError: e.g. an integer over Python's 4300-digit limit
            why = "record nested too deeply (over ~1000 levels)" if isinstance(e, RecursionError) else str(e)[:200]
            yield BadRecord(filename, f"line {lineno}", None, why)
            continue
        yield Item(lineno, value, f"line {lineno}")
