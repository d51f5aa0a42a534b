-- Responses (OpenAI's Responses API): one row per stored response, beside the
-- conversation that holds its items. See the PostgreSQL migration of the same number for
-- the model: the row is keyed by the conversation its id names and records where its
-- turn lies (`items_conversation_id`, `first_sequence..=last_sequence`).

CREATE TABLE responses (
    conversation_id       BLOB    NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    id                    BLOB    NOT NULL,
    owner                 TEXT    NOT NULL,
    items_conversation_id BLOB    NOT NULL,
    first_sequence        INTEGER NOT NULL CHECK (first_sequence >= 0),
    last_sequence         INTEGER NOT NULL CHECK (last_sequence >= first_sequence),
    -- The response object as it was answered, as JSON text.
    body                  TEXT    NOT NULL,
    created_at            TEXT    NOT NULL,
    PRIMARY KEY (conversation_id, id)
) WITHOUT ROWID;

-- Correctness never depends on PRAGMA foreign_keys (a setting of the caller's pool), so a
-- conversation's responses go with it through a trigger, which SQLite always runs.
CREATE TRIGGER responses_go_with_their_conversation AFTER DELETE ON conversations BEGIN
    DELETE FROM responses WHERE conversation_id = old.id;
END;
