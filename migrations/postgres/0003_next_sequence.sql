-- Sequence numbers only ever increase within a conversation: a number handed out once is
-- never handed out again, even after the messages holding it were truncated or deleted,
-- so anything derived from it (an item id) stays unique. The next number to hand out is
-- kept beside the row count, which from now on counts rows and nothing else.
--
-- Backfilled from the rows already stored (one past the highest number, and never below
-- the count, which the old dense numbering made equal). Only a column is added: no row
-- is rewritten but its conversation's counter. The statements run in the migration's
-- transaction, whose ALTER TABLE holds writers of the old schema off until it commits.
-- The UPDATE joins the two tables on the conversation id, which Citus, with both tables
-- distributed by it, runs on each worker without moving rows.

ALTER TABLE conversations ADD COLUMN next_sequence bigint;

UPDATE conversations
SET next_sequence = greatest(numbered.next_sequence, conversations.message_count)
FROM (
    SELECT conversation_id, max(sequence_number) + 1 AS next_sequence
    FROM messages
    GROUP BY conversation_id
) AS numbered
WHERE conversations.id = numbered.conversation_id;

-- Conversations without a message.
UPDATE conversations SET next_sequence = message_count WHERE next_sequence IS NULL;

-- Two statements: Citus refuses ADD CONSTRAINT beside other subcommands of one ALTER.
ALTER TABLE conversations ALTER COLUMN next_sequence SET NOT NULL;
ALTER TABLE conversations
    ADD CONSTRAINT conversations_next_sequence_covers_rows CHECK (next_sequence >= message_count);

-- Retention purges conversations idle since a time, across owners, in batches: each
-- batch finds them through this index instead of reading the whole table.
CREATE INDEX conversations_idle ON conversations (updated_at);

-- Cursor listings: one owner's conversations by id (UUIDv7, so creation order).
CREATE INDEX conversations_owner_id ON conversations (owner, id);
