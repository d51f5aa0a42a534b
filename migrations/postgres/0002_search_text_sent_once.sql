-- A message's text is stored once: in the message itself.
--
-- Until now every message also carried its plain text in `content_text`, and
-- `content_search` was generated from that copy. Both copies cost the server on every turn
-- (the text compressed and written twice) and the wire too (the text sent twice, which
-- pushed long turns past one TLS record). From here on the statements that write a
-- message compute `content_search` themselves, from the text the message already holds
-- (its `content` string, or the text sent beside it when the message keeps its words
-- elsewhere); existing rows keep the vector they have, so nothing is recomputed and no
-- row is rewritten.
--
-- Both commands change the catalog only: no table rewrite, no row touched.

ALTER TABLE messages ALTER COLUMN content_search DROP EXPRESSION;
ALTER TABLE messages DROP COLUMN content_text;
