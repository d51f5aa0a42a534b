-- A message's text is stored once: in the message itself.
--
-- Until now every message also carried its plain text in `content_text`, and
-- `content_search` was generated from that copy. Both copies cost the server on every turn
-- (the text compressed and written twice) and the wire too (the text sent twice, which
-- pushed long turns past one TLS record). From here on the statements that write a
-- message compute `content_search` themselves, from the text the message already holds
-- (its `content` string, or the text sent beside it when the message keeps its words
-- elsewhere). Existing rows keep the vector they have: nothing is recomputed.
--
-- The vector moves to a plain column by copy, not by `ALTER COLUMN ... DROP EXPRESSION`:
-- Citus refuses that command on a distributed table, and these commands run there too.
-- The copy rewrites `messages` once; on a large table, run this migration when a
-- minute's lock on it is acceptable.

ALTER TABLE messages ADD COLUMN search tsvector;
UPDATE messages SET search = content_search;
DROP INDEX messages_content_search;
ALTER TABLE messages DROP COLUMN content_search;
ALTER TABLE messages DROP COLUMN content_text;
ALTER TABLE messages RENAME COLUMN search TO content_search;
CREATE INDEX messages_content_search ON messages USING GIN (content_search);
