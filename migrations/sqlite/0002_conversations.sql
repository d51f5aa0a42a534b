-- Conversations and their messages.
--
-- Ids are UUIDv7 made by the application, stored as 16-byte blobs. JSON is stored as
-- text. Timestamps are UTC text of fixed width (YYYY-MM-DDTHH:MM:SS.ffffffZ), so text
-- order is chronological order.

CREATE TABLE conversations (
    id            BLOB    PRIMARY KEY NOT NULL,
    owner         TEXT    NOT NULL,
    title         TEXT,
    created_at    TEXT    NOT NULL,
    updated_at    TEXT    NOT NULL,
    -- Sequence numbers are dense, so this is also the next one to hand out.
    message_count INTEGER NOT NULL CHECK (message_count >= 0),
    metadata      TEXT    NOT NULL
) WITHOUT ROWID;

-- Listings: one owner's conversations, newest first, ties broken by id.
CREATE INDEX conversations_owner_recent
    ON conversations (owner, updated_at DESC, id DESC);

CREATE TABLE messages (
    -- A stable row id for the full-text index to point at (VACUUM may renumber an
    -- implicit rowid, never an INTEGER PRIMARY KEY).
    id               INTEGER PRIMARY KEY,
    conversation_id  BLOB    NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    sequence_number  INTEGER NOT NULL CHECK (sequence_number >= 0),
    role             TEXT    NOT NULL,
    -- The message object exactly as it is sent upstream again.
    message          TEXT    NOT NULL,
    -- The message's plain text, only for full-text search.
    content_text     TEXT    NOT NULL,
    -- Kept beside the message, never spliced back upstream.
    reasoning        TEXT,
    reasoning_events TEXT,
    metadata         TEXT    NOT NULL,
    created_at       TEXT    NOT NULL,
    UNIQUE (conversation_id, sequence_number)
);

-- Full-text search over content_text. The index stores no copy of the text (the
-- messages table is its content); the triggers below keep it in step with every
-- insert, update and delete, including deletes cascaded from conversations.
-- No diacritics folding, to match PostgreSQL's 'simple' configuration.
CREATE VIRTUAL TABLE messages_search USING fts5 (
    content_text,
    content = 'messages',
    content_rowid = 'id',
    tokenize = 'unicode61 remove_diacritics 0'
);

CREATE TRIGGER messages_search_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_search (rowid, content_text) VALUES (new.id, new.content_text);
END;

CREATE TRIGGER messages_search_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_search (messages_search, rowid, content_text)
        VALUES ('delete', old.id, old.content_text);
END;

CREATE TRIGGER messages_search_update AFTER UPDATE OF content_text ON messages BEGIN
    INSERT INTO messages_search (messages_search, rowid, content_text)
        VALUES ('delete', old.id, old.content_text);
    INSERT INTO messages_search (rowid, content_text) VALUES (new.id, new.content_text);
END;
