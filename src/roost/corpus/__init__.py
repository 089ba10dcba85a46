"""The post corpus: importers → normalise → clean → dedup → PII scrub → language → SQLite store.

Run it with `roost ingest PATH...`; look at it with `roost corpus stats`; erase with `roost forget`.
"""
