-- The full-text index without its table of sizes.
--
-- FTS5 keeps, beside its index, the number of words of each indexed message (its
-- `%_docsize` table), only for ranking by relevance (`bm25`, `rank`). The store's
-- searches order by recency and never rank, and filling that table was a third of what
-- indexing a message cost. `columnsize=0` leaves it out; FTS5 options cannot be changed
-- on an existing table, so the index is made again, from the messages themselves.
--
-- `rebuild` indexes every message, the pending ones included, so the pending list is
-- emptied with it. The triggers of migration 0007 name the index, which keeps its name.
-- On a large file this migration takes as long as indexing every message once.

DROP TABLE messages_search;

CREATE VIRTUAL TABLE messages_search USING fts5 (
    content_text,
    content = 'messages',
    content_rowid = 'id',
    tokenize = 'unicode61 remove_diacritics 0',
    columnsize = 0
);

INSERT INTO messages_search (messages_search) VALUES ('rebuild');

DELETE FROM search_pending;
