-- Conversations and their messages.
--
-- No column has a database-generated default: ids are UUIDv7 made by the application and
-- every value is written explicitly, so this schema also runs on Postgres-compatible
-- distributed engines (CockroachDB, YugabyteDB, Citus) that lack or discourage
-- server-side uuid functions and sequences.

CREATE TABLE conversations (
    id            uuid        PRIMARY KEY,
    owner         text        NOT NULL,
    title         text,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    -- Sequence numbers are dense, so this is also the next one to hand out.
    message_count bigint      NOT NULL CHECK (message_count >= 0),
    metadata      jsonb       NOT NULL CHECK (jsonb_typeof(metadata) = 'object')
);

-- Listings: one owner's conversations, newest first, ties broken by id.
CREATE INDEX conversations_owner_recent
    ON conversations (owner, updated_at DESC, id DESC);

CREATE TABLE messages (
    conversation_id  uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    sequence_number  bigint      NOT NULL CHECK (sequence_number >= 0),
    role             text        NOT NULL,
    -- The message object exactly as it is sent upstream again. json, not jsonb: it is
    -- read whole on every turn and never queried inside, and json hands back the stored
    -- text as it is, where jsonb would rebuild it on each read.
    message          json        NOT NULL,
    -- The message's plain text, only for full-text search.
    content_text     text        NOT NULL,
    content_search   tsvector    GENERATED ALWAYS AS (to_tsvector('simple', content_text)) STORED,
    -- Kept beside the message, never spliced back upstream.
    reasoning        text,
    reasoning_events jsonb,
    metadata         jsonb       NOT NULL CHECK (jsonb_typeof(metadata) = 'object'),
    created_at       timestamptz NOT NULL,
    -- The unique (conversation_id, sequence_number) pair, as the primary key that
    -- distributed engines want on every table; it also serves history reads in order.
    PRIMARY KEY (conversation_id, sequence_number)
);

CREATE INDEX messages_content_search ON messages USING GIN (content_search);
