-- A pending request remembers (as a hash) the browser-binding cookie of the browser that started it:
-- only that browser may redeem the login's ticket, so a ticket sent to someone else cannot sign them
-- in to the sender's session (login CSRF).
ALTER TABLE authorization_requests ADD COLUMN browser_hash BLOB;
