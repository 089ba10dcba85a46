"""The server store backend: PostgreSQL (+ pgvector for search), shared by many writers and replicas. It owns its
schema (numbered SQL in `migrations/`, applied on open), its erasure rewrites (`erase`) and the local server of
`roost db start` (`server`); everything else reaches it through the protocols of roost.corpus.backend, and the
PostgreSQL search backend (roost.search.pgsearch) through this package's public names below.

    from roost.corpus.postgres import PgStore, PgReader     # roost.corpus.backend.open_store picks it for a URL
"""

from roost.corpus.postgres.erase import owe_rewrite, pay_owed
from roost.corpus.postgres.reader import PgReader
from roost.corpus.postgres.store import PgStore, connect, has_schema, migrate

__all__ = ["PgReader", "PgStore", "connect", "has_schema", "migrate", "owe_rewrite", "pay_owed"]
