"""The post corpus: importers → normalise → clean → dedup → PII scrub → language → the post store, on SQLite
(roost.corpus.sqlite, a file under the home) or PostgreSQL (roost.corpus.postgres, shared by every replica).

Run it with `roost ingest PATH...`; look at it with `roost corpus stats`; erase with `roost forget`. Each store
backend owns its schema in its own package behind the protocols of roost.corpus.backend; roost.registry says which
one a location names; roost.corpus.rows holds what both share (column names, the training and search filters).
"""
