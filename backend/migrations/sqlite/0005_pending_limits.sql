-- Pending sign-in requests remember the network they came from (an IPv4 address, an IPv6 /64), so that
-- one network can hold only so many at a time, and are found by network and by browser quickly.
ALTER TABLE authorization_requests ADD COLUMN client_network TEXT;
CREATE INDEX authorization_requests_network ON authorization_requests (client_network, expires_at);
CREATE INDEX authorization_requests_browser ON authorization_requests (browser_hash, expires_at);
