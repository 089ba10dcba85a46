"""The `roost` command: one verb per user action, each a thin call into a stage. This package is the top floor:
nothing imports it (tests and benches run the installed `roost` script); each module registers one verb group
on the app of roost.cli.app, in the order `roost --help` lists them.

`roost --help`; `roost --home DIR VERB ...`. Errors a user can act on print as one line (no traceback) and exit
non-zero.
"""

from __future__ import annotations

import importlib

from roost.cli.app import app, command

__all__ = ["app", "main"]

# the verb groups, in the order `roost --help` lists them (each module registers its verbs on `app`)
VERB_MODULES = ("corpus", "data", "demo", "model", "train", "serve", "search", "plan", "db")
for _name in VERB_MODULES:
    importlib.import_module(f"roost.cli.{_name}")


def main() -> None:
    command()()  # as app() does, with bracketed words in help texts kept


if __name__ == "__main__":
    main()
