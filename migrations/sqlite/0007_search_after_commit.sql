-- The full-text index is fed after the turn, in batches, instead of row by row.
--
-- FTS5 writes a new segment of its index at every commit (and at every savepoint
-- release) that added terms, and later merges those segments back together: indexing a
-- turn's messages as they are inserted cost most of a turn's instructions. A message
-- now goes into `search_pending`, a plain table, as it is inserted; the store moves
-- pending messages into the index in one statement, at most every 200 ms after a
-- batch of turns, and always before it searches, so a search still sees every message
-- committed before it (the store's docs say how).
--
-- A pending message has no entry in the index yet: deleting it only takes it off the
-- list, and changing its text needs nothing (its current text is indexed later). An
-- indexed message is deleted from the index as before, and one whose text changes is
-- taken out of the index and put back on the list.

CREATE TABLE search_pending (
    id INTEGER PRIMARY KEY
);

DROP TRIGGER messages_search_insert;
DROP TRIGGER messages_search_delete;
DROP TRIGGER messages_search_update;

CREATE TRIGGER messages_search_insert AFTER INSERT ON messages BEGIN
    INSERT INTO search_pending (id) VALUES (new.id);
END;

CREATE TRIGGER messages_search_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_search (messages_search, rowid, content_text)
        SELECT 'delete', old.id, old.content_text
        WHERE NOT EXISTS (SELECT 1 FROM search_pending WHERE id = old.id);
    DELETE FROM search_pending WHERE id = old.id;
END;

CREATE TRIGGER messages_search_update AFTER UPDATE OF content_text ON messages BEGIN
    INSERT INTO messages_search (messages_search, rowid, content_text)
        SELECT 'delete', old.id, old.content_text
        WHERE NOT EXISTS (SELECT 1 FROM search_pending WHERE id = old.id);
    INSERT OR IGNORE INTO search_pending (id) VALUES (new.id);
END;
