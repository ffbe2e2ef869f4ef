-- A pending request whose browser went to an upstream OpenID Connect provider: which one, the hash of the
-- `state` sent (the callback finds the request by it, once), the `nonce` the id_token must carry, and the
-- PKCE verifier of the challenge sent. Starting again at another provider replaces them.
ALTER TABLE authorization_requests ADD COLUMN upstream TEXT;
ALTER TABLE authorization_requests ADD COLUMN upstream_state_hash BYTEA;
ALTER TABLE authorization_requests ADD COLUMN upstream_nonce TEXT;
ALTER TABLE authorization_requests ADD COLUMN upstream_verifier TEXT;
CREATE UNIQUE INDEX authorization_requests_upstream_state ON authorization_requests (upstream_state_hash);
