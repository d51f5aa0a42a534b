-- Sequence numbers only ever increase within a conversation: a number handed out once is
-- never handed out again, even after the messages holding it were truncated or deleted,
-- so anything derived from it (an item id) stays unique. The next number to hand out is
-- kept beside the row count, which from now on counts rows and nothing else.
--
-- Backfilled from the rows already stored (one past the highest number, and never below
-- the count, which the old dense numbering made equal), in the migration's transaction.
-- SQLite adds a NOT NULL column only with a default; every insert writes it explicitly.

ALTER TABLE conversations ADD COLUMN next_sequence INTEGER NOT NULL DEFAULT 0;

UPDATE conversations
SET next_sequence = max(message_count, coalesce((
    SELECT max(m.sequence_number) + 1 FROM messages m WHERE m.conversation_id = conversations.id
), 0));

-- Retention purges conversations idle since a time, across owners, in batches: each
-- batch finds them through this index instead of reading the whole table.
CREATE INDEX conversations_idle ON conversations (updated_at);

-- Cursor listings: one owner's conversations by id (UUIDv7, so creation order).
CREATE INDEX conversations_owner_id ON conversations (owner, id);
