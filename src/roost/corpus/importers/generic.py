"""Generic importer: JSONL (or a JSON array of flat objects), CSV/TSV and Parquet, with a column mapping.

`roost ingest posts.csv --map text=body,author=user,created_at=ts --source mynet`. Columns default to the Post
field names (`id`, `author`, `created_at`, `text`, ...). Without an `id` column, the id is a hash of author,
time and text, so re-ingesting the same file is still idempotent. Lists (hashtags, mentions, urls) may be JSON
arrays or space/comma separated strings.

Budgets (`importers/limits.py`): a JSON record or a CSV line longer than `max_record_bytes` is refused after reading
that much of it (the rest of the line is skipped unread); a Parquet row group declaring more than
`max_row_group_bytes` uncompressed is refused unread, and rows are converted a batch at a time.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from roost.corpus.importers.jsonstream import Item, iter_json_array, iter_jsonl
from roost.corpus.importers.limits import DEFAULT, Limits, size
from roost.corpus.post import VISIBILITIES, BadRecord, Post, RecordError, parse_iso_date
from roost.errors import UsageError

FIELDS = (
    "id",
    "author",
    "created_at",
    "text",
    "lang",
    "reply_to",
    "quote_of",
    "repost_of",
    "hashtags",
    "mentions",
    "urls",
    "visibility",
)
LISTS = ("hashtags", "mentions", "urls")


def parse_mapping(spec: str | None) -> dict[str, str]:
    """`text=body,author=user` → {"text": "body", "author": "user"} (Post field → column)."""
    mapping = {f: f for f in FIELDS}
    if not spec:
        return mapping
    for part in spec.split(","):
        if not part.strip():
            continue
        field, sep, column = part.partition("=")
        field, column = field.strip(), column.strip()
        if not sep or not column:
            raise UsageError(f"--map: '{part}' is not FIELD=COLUMN")
        if field not in FIELDS:
            raise UsageError(f"--map: unknown field '{field}'; fields: {', '.join(FIELDS)}")
        mapping[field] = column
    return mapping


def _list(value: Any, field: str) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, list):
        if any(not isinstance(v, str) for v in value if v is not None):
            raise RecordError(field, "expected a list of strings")
        return [v for v in value if v is not None]
    if isinstance(value, str):
        s = value.strip()
        if s.startswith("["):
            try:
                parsed = json.loads(s)
            except json.JSONDecodeError:
                raise RecordError(field, "starts like a JSON array but is not one") from None
            return _list(parsed, field)
        return [v.lstrip("#@") for v in s.replace(",", " ").split() if v.strip("#@")]
    raise RecordError(field, f"expected a list or string, got {type(value).__name__}")


def row_to_post(row: dict[str, Any], mapping: dict[str, str], source: str) -> Post:
    def get(field: str) -> Any:
        v = row.get(mapping[field])
        return None if v == "" else v

    text = get("text")
    if mapping["text"] not in row:
        raise RecordError(mapping["text"], "no such column (use --map text=COLUMN)")
    author = get("author")
    if author is None or (not isinstance(author, (str, int)) or isinstance(author, bool)):
        raise RecordError(mapping["author"], "missing" if author is None else "expected a string")
    created = parse_iso_date(get("created_at"), mapping["created_at"])
    pid = get("id")
    if pid is not None and (not isinstance(pid, (str, int)) or isinstance(pid, bool)):
        raise RecordError(mapping["id"], f"expected a string or integer, got {type(pid).__name__}")
    if pid is None:
        digest = hashlib.sha1(f"{author}\x1f{created.isoformat()}\x1f{text}".encode("utf-8", "surrogatepass"))
        pid = "h" + digest.hexdigest()[:20]
    if isinstance(text, float) and text != text or text in (float("inf"), float("-inf")):
        raise RecordError(mapping["text"], "not a number (NaN/Infinity) is not text")
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        text = str(text)
    post = Post(id=f"{source}:{pid}", author=str(author), created_at=created, text=text, source=source)
    for field in ("lang", "reply_to", "quote_of", "repost_of"):
        v = get(field)
        if v is not None:
            if not isinstance(v, (str, int)) or isinstance(v, bool):
                raise RecordError(mapping[field], "expected a string")
            v = str(v)
            keep = field == "lang" or ":" in v or (field == "repost_of" and v.startswith("@"))  # "@handle": whose
            setattr(post, field, v if keep else f"{source}:{v}")
    vis = get("visibility")
    if vis is not None:
        if vis not in VISIBILITIES:
            raise RecordError(mapping["visibility"], f"unknown visibility {str(vis)[:20]!r}; one of {VISIBILITIES}")
        post.visibility = vis
    for field in LISTS:
        setattr(post, field, _list(get(field), mapping[field]))
    return post


def _convert(
    items: Iterator[Item | BadRecord], label: str, mapping: dict[str, str], source: str
) -> Iterator[Post | BadRecord]:
    for item in items:
        if isinstance(item, BadRecord):
            yield item
            continue
        if not isinstance(item.value, dict):
            yield BadRecord(label, item.where, None, f"expected an object, got {type(item.value).__name__}")
            continue
        try:
            yield row_to_post(item.value, mapping, source)
        except RecordError as e:
            yield BadRecord(label, item.where, e.field, e.message)


def _bounded_lines(text: io.TextIOBase, budget: int, overlong: list[int]) -> Iterator[str]:
    """The physical lines of a text stream, none longer than `budget` characters: a longer one is read no further
    than that, skipped, noted in `overlong` (its line number) and given to the CSV reader as a blank line."""
    lineno = 0
    while line := text.readline(budget + 1):
        lineno += 1
        if len(line) > budget and not line.endswith(("\n", "\r")):
            while (more := text.readline(1 << 20)) and not more.endswith(("\n", "\r")):
                pass
            overlong.append(lineno)
            line = "\n"
        yield line


def _csv_items(path: Path, delimiter: str, limits: Limits = DEFAULT) -> Iterator[Item | BadRecord]:
    budget = limits.max_record_bytes
    csv.field_size_limit(budget)  # one field longer than a record budget is a csv.Error for that row
    label = str(path)
    overlong: list[int] = []
    with open(path, "rb") as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")
        reader = csv.DictReader(_bounded_lines(text, budget, overlong), delimiter=delimiter)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                row = None
            except csv.Error as e:
                yield BadRecord(label, f"line {reader.line_num}", None, f"invalid CSV: {e}")
                continue
            while overlong:
                why = f"line longer than {size(budget)} (budget per record); skipped"
                yield BadRecord(label, f"line {overlong.pop(0)}", None, why)
            if row is None:
                return
            if None in row:
                yield BadRecord(label, f"line {reader.line_num}", None, "more values than header columns")
                continue
            yield Item(reader.line_num, row, f"line {reader.line_num}")


def _parquet_items(path: Path, limits: Limits = DEFAULT) -> Iterator[Item | BadRecord]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        yield BadRecord(str(path), "footer", None, f"not a readable Parquet file: {e}")
        return
    row = 0
    for rg in range(pf.num_row_groups):
        meta = pf.metadata.row_group(rg)
        if meta.total_byte_size > limits.max_row_group_bytes:
            why = f"declares {size(meta.total_byte_size)} uncompressed, over the {size(limits.max_row_group_bytes)} "
            yield BadRecord(str(path), f"row group {rg}", None, why + "budget per row group; not read")
            continue
        batches = pf.iter_batches(batch_size=4096, row_groups=[rg])
        while True:
            try:
                batch = next(batches, None)
                records = None if batch is None else batch.to_pylist()
            except Exception as e:  # a damaged page: the rest of this row group is lost
                yield BadRecord(str(path), f"row group {rg}", None, f"unreadable: {e}")
                break
            if records is None:
                break
            for rec in records:
                yield Item(row, rec, f"row {row}")
                row += 1


def read_generic(
    path: Path, kind: str, mapping: dict[str, str], source: str, limits: Limits = DEFAULT
) -> Iterator[Post | BadRecord]:
    label = str(path)
    if kind == "csv":
        items = _csv_items(path, "\t" if path.suffix.lower() == ".tsv" else ",", limits)
        yield from _convert(items, label, mapping, source)
    elif kind == "parquet":
        yield from _convert(_parquet_items(path, limits), label, mapping, source)
    else:
        with open(path, "rb") as fp:
            head = fp.read(64).lstrip()
            fp.seek(0)
            items = (
                iter_json_array(fp, label, limits=limits) if head.startswith(b"[") else iter_jsonl(fp, label, limits)
            )
            yield from _convert(items, label, mapping, source)
