-- The full-text index without its table of sizes, and new messages found by their id
-- instead of a list.
--
-- FTS5 keeps, beside its index, the number of words of each indexed message (its
-- `%_docsize` table), only for ranking by relevance (`bm25`, `rank`). The store's
-- searches order by recency and never rank, and filling that table was a third of what
-- indexing a message cost. `columnsize=0` leaves it out; FTS5 options cannot be changed
-- on an existing table, so the index is made again, from the messages themselves. On a
-- large file this migration takes as long as indexing every message once.
--
-- Migration 0007 put every inserted message on `search_pending` (a trigger, and a page of
-- that list written with every turn). Message ids only grow, so `search_indexed.through`
-- now marks how far the index has come: a message with a higher id is pending, and the
-- list holds only messages the index had passed whose text was rewritten. SQLite hands out
-- the highest id again once its row is gone, so deleting the highest rows lowers the mark
-- with them: an id the index has passed never comes back unindexed.

DROP TABLE messages_search;

CREATE VIRTUAL TABLE messages_search USING fts5 (
    content_text,
    content = 'messages',
    content_rowid = 'id',
    tokenize = 'unicode61 remove_diacritics 0',
    columnsize = 0
);

-- `rebuild` indexes every message, the pending ones included.
INSERT INTO messages_search (messages_search) VALUES ('rebuild');

DELETE FROM search_pending;

-- One row: every message whose id is at most `through` is in the index, but for those on
-- `search_pending`.
CREATE TABLE search_indexed (
    only    INTEGER PRIMARY KEY CHECK (only = 1),
    through INTEGER NOT NULL
);

INSERT INTO search_indexed (only, through) SELECT 1, coalesce(max(id), 0) FROM messages;

DROP TRIGGER messages_search_insert;
DROP TRIGGER messages_search_delete;
DROP TRIGGER messages_search_update;

CREATE TRIGGER messages_search_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_search (messages_search, rowid, content_text)
        SELECT 'delete', old.id, old.content_text
        WHERE old.id <= (SELECT through FROM search_indexed)
          AND NOT EXISTS (SELECT 1 FROM search_pending WHERE id = old.id);
    DELETE FROM search_pending WHERE id = old.id;
    UPDATE search_indexed SET through = (SELECT coalesce(max(id), 0) FROM messages)
        WHERE through > (SELECT coalesce(max(id), 0) FROM messages);
END;

CREATE TRIGGER messages_search_update AFTER UPDATE OF content_text ON messages BEGIN
    INSERT INTO messages_search (messages_search, rowid, content_text)
        SELECT 'delete', old.id, old.content_text
        WHERE old.id <= (SELECT through FROM search_indexed)
          AND NOT EXISTS (SELECT 1 FROM search_pending WHERE id = old.id);
    INSERT OR IGNORE INTO search_pending (id)
        SELECT new.id WHERE new.id <= (SELECT through FROM search_indexed);
END;
