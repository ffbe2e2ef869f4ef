-- A pending request the user has signed in to: the login API marks it with the user and a one-time
-- ticket, and the browser's top-level visit to /authorize/resume redeems the ticket (setting the
-- session cookie first-party, even when the login page is on another site).
ALTER TABLE authorization_requests ADD COLUMN user_id INTEGER REFERENCES users (id) ON DELETE CASCADE;
ALTER TABLE authorization_requests ADD COLUMN auth_time INTEGER;
ALTER TABLE authorization_requests ADD COLUMN ticket_hash BLOB;
CREATE UNIQUE INDEX authorization_requests_ticket ON authorization_requests (ticket_hash);
