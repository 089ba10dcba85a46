"""Which of roost's files actually run on the two paths a newcomer follows (docs/architecture.md), counted, not
listed by hand:

    python scripts/trace_paths.py            # both paths, ~3 min on 2 cores; --json for the raw lists

1. **One post, from an X archive to a cited answer**: `roost ingest`, `roost index`, `roost ask -m smollm2`.
2. **One training run, from `roost train` to an exported HF folder**: `roost train --preset small` (2 steps,
   exported when it ends) on shards made beforehand.

It runs the verbs in this process as a user types them (the roof, roost.cli, builds the context and calls one
stage function) under a profiler hook on every thread, and records each roost module in which a function ran, in
the order each first ran. "Stage files" leave out the roof and the ground every command stands on (errors,
settings, workspace, context, registry, redaction, the CPU probe, hashing, package `__init__`s): the files a
reader must open to follow the post or the run. Setup (the exports, the imported model, the tokenizer and
shards) runs before the trace starts. Worker processes are not traced: ingest runs with one worker here.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import tempfile
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

GROUND = {
    "roost.errors", "roost.config", "roost.workspace", "roost.context", "roost.registry", "roost.redact",
    "roost.probe", "roost.hashing", "roost.hardware",
}  # fmt: skip
SRC = Path(__file__).resolve().parents[1] / "src" / "roost"


def module_of(filename: str) -> str | None:
    try:
        rel = Path(filename).resolve().relative_to(SRC)
    except ValueError:
        return None
    parts = ["roost", *rel.with_suffix("").parts]
    return ".".join(parts)


def holds(value: Any, marker: str, depth: int = 3) -> bool:
    """Whether `value` (a string, bytes, a container or an object's fields, `depth` levels down) holds `marker`."""
    if isinstance(value, str):
        return marker in value.lower()
    if isinstance(value, bytes | bytearray | memoryview):
        return marker.encode() in bytes(value[:1_000_000]).lower()
    if depth == 0 or isinstance(value, int | float | bool | type(None)):
        return False
    if isinstance(value, dict):
        items: Any = list(value.values())[:200]
    elif isinstance(value, list | tuple | set | frozenset):
        items = list(value)[:200]
    elif hasattr(value, "__dataclass_fields__"):
        items = [getattr(value, f, None) for f in value.__dataclass_fields__]
    else:
        return False
    return any(holds(v, marker, depth - 1) for v in items)


class Tracer:
    """Records, in first-run order, each roost module in which a function runs (module and class bodies, which run
    at import, do not count), on every thread; with `marker`, only the functions called with the marker in their
    arguments or returning it (the modules the post passes through)."""

    def __init__(self, marker: str | None = None) -> None:
        self.marker = marker
        self.seen: dict[str, str] = {}  # module → the first function that ran in it
        self.files: dict[str, str | None] = {}

    def hook(self, frame: Any, event: str, arg: Any) -> None:
        if event not in ("call", "return"):
            return
        code = frame.f_code
        f = code.co_filename
        mod = self.files[f] if f in self.files else self.files.setdefault(f, module_of(f))
        if not mod or mod in self.seen or not code.co_flags & inspect.CO_OPTIMIZED:  # functions only
            return
        if self.marker is None:
            if event == "call":
                self.seen[mod] = code.co_qualname
            return
        carried = holds(arg, self.marker) if event == "return" else any(
            holds(frame.f_locals.get(name), self.marker) for name in code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
        )  # fmt: skip
        if carried:
            self.seen[mod] = code.co_qualname

    def __enter__(self) -> Tracer:
        sys.setprofile(self.hook)
        threading.setprofile(self.hook)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]

    def stage_files(self) -> list[str]:
        return [
            m for m in self.seen
            if not m.startswith("roost.cli") and m not in GROUND and not m.endswith("__init__") and m != "roost.__main__"
        ]  # fmt: skip


def roost(*args: str) -> None:
    """One `roost` command line, run in this process as the installed script runs it."""
    import runpy

    sys.argv = ["roost", *args]
    try:
        runpy.run_module("roost", run_name="__main__")  # `python -m roost ARGS`
    except SystemExit as e:
        if e.code:
            raise


def write_exports(home: Path) -> None:
    from roost.demo.writers import Draft, write_x_archive

    t0 = datetime(2024, 11, 1, 8, tzinfo=UTC)
    texts = [
        "The lighthouse keeper says the storm will pass by Sunday evening.",
        "Ferries to the island are cancelled until the storm passes, the harbour office says.",
        "Fresh bread at the market this morning, the bakery stall opens at seven.",
        "The tram strike starts on Monday; unions say it lasts two days.",
    ]
    drafts = [Draft(f"{1000 + i}", t, t0 + timedelta(hours=i)) for i, t in enumerate(texts)]
    write_x_archive(home / "exports" / "x-archive", "harbourwatch", "4242", drafts)


def trace_post(home: Path) -> Tracer:
    write_exports(home)
    roost("--home", str(home), "import", "smollm2")
    with Tracer(marker="ferries") as t:  # the one post that holds the word
        roost("--home", str(home), "ingest", str(home / "exports"), "--workers", "1", "-q")
        roost("--home", str(home), "index")
        roost(
            "--home", str(home), "ask", "When can I take a boat to the island again?", "-m", "smollm2", "--posts", "3"
        )
    return t


def trace_training(home: Path) -> Tracer:
    roost("--home", str(home), "demo-corpus")
    roost("--home", str(home), "ingest", str(home / "exports"), "-q")
    roost("--home", str(home), "tokenizer", "train")
    roost("--home", str(home), "tokenize")
    with Tracer() as t:
        roost("--home", str(home), "train", "--name", "trace", "--preset", "small", "--steps", "2", "--seq-len", "64",
              "--batch-size", "2", "--eval-every", "2", "--ckpt-every", "2", "-q")  # fmt: skip
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print the module lists as JSON")
    ap.add_argument("--only", choices=("post", "train"), help="trace one path")
    args = ap.parse_args()
    os.environ.setdefault("COLUMNS", "120")
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="roost-trace-") as tmp:
        for name, run in (("post to cited answer", trace_post), ("roost train to exported folder", trace_training)):
            if args.only and not name.startswith(args.only) and not name.startswith(f"roost {args.only}"):
                continue
            t = run(Path(tmp) / name.split()[0])
            out[name] = {"stage_files": {m: t.seen[m] for m in t.stage_files()}, "modules_run": t.seen}
    if args.json:
        print(json.dumps(out, indent=1))
        return
    for name, got in out.items():
        files = got["stage_files"]
        print(f"\n{name}: {len(files)} stage files ({len(got['modules_run'])} roost modules ran)")
        for i, (m, first) in enumerate(files.items(), 1):
            print(f"  {i:2d}. src/{m.replace('.', '/')}.py  ({first})")


if __name__ == "__main__":
    main()
