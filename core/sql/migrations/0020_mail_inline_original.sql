-- 0020: a message's deflated original stays in its mail_messages row when the row fits a page
-- (toast_tuple_target at its maximum: below it PostgreSQL neither compresses nor moves a value out).
-- A typical original (6 kB of mail, 3 kB deflated) was cut into two TOAST rows, each with a TOAST
-- index entry, in the worker's transaction; now it is one heap row. A larger row still sends
-- raw_deflate out of line, uncompressed (STORAGE EXTERNAL). Rows stored before keep their TOAST
-- rows; both read the same.
ALTER TABLE mail_messages SET (toast_tuple_target = 8160);
