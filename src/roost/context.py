"""What a roost command runs with, built once at the edge (the CLI, the server, a bench, a test) and passed down:
the workspace (every path), the settings (`roost.toml` and flags), and where the post store is.

    ctx = Roost.at("roost-home")                                    # home, its roost.toml, its store
    ctx = Roost.at(home, config=Path("my.toml"), store="postgresql://…")
    open_store(ctx.store); open_search(ctx); Trainer(ctx, cfg)

Stages take the context (or the one backend they need); none reads the store location from the environment or
rebuilds a workspace from a bare path. The context says where the backends are and which kinds they are
(roost.registry); each backend's opener lives with its protocol (roost.corpus.backend.open_store,
roost.search.backend.open_search), because the context is on the ground floor that every stage imports: an
object here that opened them would import every floor above it. A long-lived edge (the server) opens them once
and passes the opened ones down (roost.serve.search_api.SearchService). The environment is read here only, as a user's input: `$ROOST_HOME`
(roost.workspace) and `$ROOST_STORE`, below `--store` and `[store] url`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roost.config import RoostConfig, load_config
from roost.errors import UsageError
from roost.registry import Location, SearchKind, StoreKind, describe, search_kind, store_kind, store_location
from roost.workspace import Workspace


@dataclass(frozen=True)
class Roost:
    """The workspace, the settings and the store location of one command."""

    ws: Workspace
    settings: RoostConfig = field(default_factory=RoostConfig)
    store: Location = field(default=None)  # type: ignore[assignment]  # None: the home's SQLite file

    def __post_init__(self) -> None:
        if self.store is None:
            object.__setattr__(self, "store", self.ws.corpus_db)

    @classmethod
    def at(
        cls,
        home: str | os.PathLike[str] | None = None,
        config: Path | None = None,
        store: str | None = None,
        settings: RoostConfig | None = None,
    ) -> Roost:
        """The context of a home (`--home`, else `$ROOST_HOME`, else ./roost-home): its settings from `config` (else
        `<home>/roost.toml`, unless `settings` are given), its store from `store` (`--store`), else `[store] url`,
        else `$ROOST_STORE`, else `<home>/corpus.db`."""
        ws = Workspace.resolve(home)
        if config is not None and not config.is_file():
            raise UsageError(f"--config {config}: no such file")
        cfg = settings if settings is not None else load_config(config or ws.config_file)
        given = [("--store", store), ("[store] url", cfg.store.url), ("$ROOST_STORE", os.environ.get("ROOST_STORE"))]
        where, url = next(((w, u) for w, u in given if u), ("", None))
        return cls(ws, cfg, store_location(ws.corpus_db, url, where))

    @property
    def home(self) -> Path:
        return self.ws.root

    @property
    def store_kind(self) -> StoreKind:
        return store_kind(self.store)

    @property
    def search_kind(self) -> SearchKind:
        """The configured search backend (checked against the store: the PostgreSQL one needs it there)."""
        return search_kind(self.settings.search.backend, self.store)

    def describe_store(self) -> str:
        """The store as it may be shown or written into files (a URL without its password)."""
        return describe(self.store)

    def with_settings(self, **sections: Any) -> Roost:
        """The same context with some settings sections replaced (`ctx.with_settings(search=cfg)`)."""
        return dataclasses.replace(self, settings=dataclasses.replace(self.settings, **sections))
