-- 0002: near-copy lookups in the database. The LSH bands of every original's MinHash signature, so a writer
-- asks the store for a batch's candidates (one indexed query) instead of loading every signature at start and
-- replaying the other writers' (roost.corpus.dedup.StoreCopies). A scheme is one (num_perm, bands × rows) split,
-- which follows from corpus.num_perm and corpus.near_dup_threshold; a writer with a new one fills its bands from
-- `signatures` once, and every writer adds bands for every scheme with each signature it stores.

CREATE TABLE band_schemes (
    scheme text PRIMARY KEY,          -- 'num_perm:BxR'
    num_perm integer NOT NULL,
    bands integer NOT NULL,
    band_bytes integer NOT NULL       -- R × 4 (uint32 values)
);

CREATE TABLE signature_bands (
    scheme text NOT NULL,
    band smallint NOT NULL,
    key bytea NOT NULL,               -- the band's R values, as stored in signatures.sig
    post_id text COLLATE "C" NOT NULL,
    PRIMARY KEY (scheme, band, key, post_id)
);
CREATE INDEX signature_bands_post ON signature_bands (post_id);
