-- A turn moves its conversation's `updated_at`, and with it the conversation's entry in
-- every index that holds the column: each such index costs every turn two pages written
-- to the write-ahead log (the entry's old place and its new one). conversations_idle
-- served only retention, which runs rarely; retention now finds idle conversations owner
-- by owner, through conversations_owner_recent (owner, updated_at DESC, id DESC), where
-- one owner's idle ones are one range. IF EXISTS: an operator may have dropped it
-- already.
DROP INDEX IF EXISTS conversations_idle;
