-- 0004: rewrites an erasure still owes. forget() records each table that lost rows, with its transaction, in the
-- same transaction as the delete; a rewrite that could not run (an older snapshot or writer, a table lock held
-- past the timeout, a role that may not rewrite the table) stays here, and the next checkpoint() of any process
-- (the next erasure, `roost db erase-pending`, a server's indexer) tries again. search_docs has its own
-- entry, written by the replica that deleted the rows.
CREATE TABLE erase_pending (
    relname text PRIMARY KEY,          -- a table or partition of this store
    deleted_by bigint NOT NULL         -- the newest deleting transaction (xid8)
);
