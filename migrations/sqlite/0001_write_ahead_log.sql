-- no-transaction
-- Write-ahead logging lets readers go on while a turn is written. SQLite refuses to
-- switch journal modes inside a transaction, hence this migration runs outside one.
-- The mode is stored in the database file, so it holds for every later connection;
-- an in-memory database keeps its own mode and ignores this.
PRAGMA journal_mode = WAL;
