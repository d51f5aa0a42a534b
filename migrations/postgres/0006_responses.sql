-- Responses (OpenAI's Responses API): one row per stored response, beside the
-- conversation that holds its items.
--
-- A chain of responses is a conversation: the turn of each response is stored as
-- messages, and the row here records the response object as answered and where its turn
-- lies (`items_conversation_id`, sequence numbers `first_sequence..=last_sequence`, the
-- last one being the assistant message). The row is keyed by the conversation its id
-- names, so on Citus it is distributed, and found, by that conversation id like the
-- messages; that is also the conversation holding its items, except after a branch raced
-- another turn to the same point (then the items went to a fork, named here).

CREATE TABLE responses (
    conversation_id       uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    id                    uuid        NOT NULL,
    owner                 text        NOT NULL,
    items_conversation_id uuid        NOT NULL,
    first_sequence        bigint      NOT NULL CHECK (first_sequence >= 0),
    last_sequence         bigint      NOT NULL CHECK (last_sequence >= first_sequence),
    -- The response object as it was answered; read back whole, never queried inside.
    body                  json        NOT NULL,
    created_at            timestamptz NOT NULL,
    PRIMARY KEY (conversation_id, id)
);
