-- Deleting one tool call of an assistant message keeps the item ids of the calls left.
--
-- A `function_call` item is named `fc_<sequence number>_<n>`, where `n` is the call's place
-- in the message's `tool_calls` when it was stored. Once a call before it is deleted, its
-- place moves down, so the numbers the remaining calls had are kept beside the message: a
-- JSON array, one number per remaining call, in `tool_calls` order. NULL, which every row
-- stored so far has and keeps, means the calls are numbered by their place. Only a column
-- is added; no row is rewritten.

ALTER TABLE messages ADD COLUMN call_numbers TEXT;
