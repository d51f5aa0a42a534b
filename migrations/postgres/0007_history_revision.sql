-- A revision of each conversation's messages, for the history kept in process.
--
-- Every change the store makes to a conversation's messages (a turn, a truncation, an
-- item delete) moves `revision` on by one, in the statement that changes its
-- `message_count`. A store that holds a conversation's history in memory sends the
-- revision it holds with the next history read, and the read leaves the messages out
-- when the row still has it (see src/store/history_cache.rs). A change made to the
-- messages by hand must move it on too:
--   UPDATE conversations SET revision = revision + 1 WHERE id = ...;
--
-- A constant default adds the column without rewriting the table (PostgreSQL 11 and
-- later), and Citus adds it to every shard.

ALTER TABLE conversations ADD COLUMN revision bigint NOT NULL DEFAULT 0;
