-- 0005: tombstones keep keyed hashes, never a forgotten name or id (roost.corpus.tombkeys), and erasures are
-- followed by the seqs they erased. After this file, roost.corpus.postgres.store.migrate runs the Python step of this
-- version in the same transaction: it writes the store's random key into store_secret, replaces every
-- clear-text tombstone key with its hash, brings posts.author_key to today's normalisation (NFKC_Casefold), and
-- owes the tombstones table a rewrite (erase_pending) so the old keys' bytes leave its files.
--
-- store_secret holds the key every writer of this store shares (writers on many machines, one database): the
-- one row is readable by roost's role (the tables' owner) and by nobody else unless granted.
CREATE TABLE store_secret (id int PRIMARY KEY CHECK (id = 1), key bytea NOT NULL);
REVOKE ALL ON store_secret FROM PUBLIC;

-- one row per erased post: followers (search_docs, dedup state, the leak guard) drop exactly these seqs
CREATE TABLE erased (n bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, seq bigint NOT NULL);
