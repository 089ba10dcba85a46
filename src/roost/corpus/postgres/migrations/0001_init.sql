-- 0001: the post store on PostgreSQL, the same rows as the SQLite store (corpus/sqlite/store.py), applied on open by
-- roost.corpus.postgres.store.migrate (one transaction per file, recorded in schema_migrations).
--
-- posts is partitioned BY RANGE (created_at), one partition per month (posts_YYYY_MM, made on demand by the
-- writer) plus posts_default for a timestamp outside 'YYYY-MM'; an old month is archived by detaching or
-- dropping its partition (delete its ids from post_ids and signatures too). created_at stays the ISO text
-- '2018-10-10T20:19:24Z' (COLLATE "C": sorts as bytes, as in SQLite), so both backends return identical values.
-- A partitioned table's unique constraints must include the partition key, so global id uniqueness lives in
-- post_ids. seq comes from a sequence: a value is never handed out twice (rolled-back inserts leave gaps).

CREATE SEQUENCE posts_seq AS bigint;

CREATE TABLE post_ids (id text COLLATE "C" PRIMARY KEY);

CREATE TABLE posts (
    seq bigint NOT NULL DEFAULT nextval('posts_seq'),
    id text COLLATE "C" NOT NULL,
    author text NOT NULL,
    author_key text NOT NULL,              -- roost.corpus.post.author_key(author), computed by the writer
    created_at text COLLATE "C" NOT NULL,  -- ISO 8601 UTC, '2018-10-10T20:19:24Z'
    text text NOT NULL,                    -- normalised original
    text_scrubbed text NOT NULL,           -- PII replaced by placeholders: what training reads
    lang text NOT NULL,
    reply_to text, quote_of text, repost_of text,
    hashtags text NOT NULL, mentions text NOT NULL, urls text NOT NULL,   -- JSON arrays, as text
    visibility text NOT NULL,
    source text NOT NULL,
    text_hash bytea,                       -- SHA-1 of text (NULL for reposts)
    dup_of text, near_dup_of text,         -- set on copies; originals and reposts have NULL
    pii_hits integer NOT NULL DEFAULT 0,
    run_id bigint
) PARTITION BY RANGE (created_at);

ALTER SEQUENCE posts_seq OWNED BY posts.seq;

CREATE TABLE posts_default PARTITION OF posts DEFAULT;

CREATE INDEX posts_seq_idx ON posts (seq);
CREATE INDEX posts_id_idx ON posts (id);
CREATE INDEX posts_author_key ON posts (author_key);
CREATE INDEX posts_hash ON posts (text_hash);
CREATE INDEX posts_dup_of ON posts (dup_of) WHERE dup_of IS NOT NULL;
CREATE INDEX posts_near_dup_of ON posts (near_dup_of) WHERE near_dup_of IS NOT NULL;
CREATE INDEX posts_reply_to ON posts (reply_to) WHERE reply_to IS NOT NULL;

CREATE TABLE signatures (post_id text COLLATE "C" PRIMARY KEY, sig bytea NOT NULL);

CREATE TABLE tombstones (
    seq bigint GENERATED ALWAYS AS IDENTITY,   -- the tombstone cursor followers read from
    kind text NOT NULL CHECK (kind IN ('post', 'author')),
    key text NOT NULL,
    forgotten_at text NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX tombstones_seq ON tombstones (seq);

CREATE TABLE ingest_runs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at text NOT NULL, finished_at text, status text NOT NULL, paths text NOT NULL, report text,
    pid integer,                 -- the writer's OS process (on its own machine)
    host text,
    backend_pid integer,         -- its server session: a run whose session is gone was killed
    backend_start timestamptz
);
