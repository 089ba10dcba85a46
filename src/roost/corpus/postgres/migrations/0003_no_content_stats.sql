-- 0003: no planner statistics of the posts' content. ANALYZE (autovacuum runs it on its own) copies sample values
-- — most common values, histogram bounds — of every column into pg_statistic, where an erasure of the posts
-- cannot reach them (a catalog only a superuser may rewrite). The columns holding people's words, names and ids
-- are not sampled; lookups on them go through their indexes, which need no statistics. New monthly partitions
-- get the same setting when roost creates them (roost.corpus.postgres.store.PRIVATE_COLUMNS).

ALTER TABLE posts
    ALTER COLUMN id SET STATISTICS 0, ALTER COLUMN author SET STATISTICS 0, ALTER COLUMN author_key SET STATISTICS 0,
    ALTER COLUMN text SET STATISTICS 0, ALTER COLUMN text_scrubbed SET STATISTICS 0,
    ALTER COLUMN reply_to SET STATISTICS 0, ALTER COLUMN quote_of SET STATISTICS 0,
    ALTER COLUMN repost_of SET STATISTICS 0, ALTER COLUMN hashtags SET STATISTICS 0,
    ALTER COLUMN mentions SET STATISTICS 0, ALTER COLUMN urls SET STATISTICS 0,
    ALTER COLUMN dup_of SET STATISTICS 0, ALTER COLUMN near_dup_of SET STATISTICS 0;
ALTER TABLE post_ids ALTER COLUMN id SET STATISTICS 0;
ALTER TABLE signatures ALTER COLUMN post_id SET STATISTICS 0;
ALTER TABLE signature_bands ALTER COLUMN post_id SET STATISTICS 0;
ALTER TABLE tombstones ALTER COLUMN key SET STATISTICS 0;
