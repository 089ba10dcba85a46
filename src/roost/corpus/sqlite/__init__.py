"""The embedded store backend: one SQLite file (WAL) in the home. It owns its schema (`store.SCHEMA`, numbered
versions migrated on open); everything else reaches it through the protocols of roost.corpus.backend.

    from roost.corpus.sqlite import Store, StoreReader     # roost.corpus.backend.open_store picks it for a path
"""

from roost.corpus.sqlite.reader import StoreReader
from roost.corpus.sqlite.store import SCHEMA_VERSION, Store

__all__ = ["SCHEMA_VERSION", "Store", "StoreReader"]
