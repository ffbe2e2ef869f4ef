-- People who sign in through an upstream provider (LDAP, OpenID Connect): each identity there, keyed by
-- the upstream's own stable id for the person, belongs to one Postern user. Such a user may have no
-- password of Postern's own (an empty password_hash).
CREATE TABLE upstream_identities (
    upstream      TEXT   NOT NULL, -- the `[upstreams.<id>]` id
    subject       TEXT   NOT NULL, -- the upstream's stable id: LDAP entryUUID (or the configured attribute), OIDC sub
    user_id       BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name          TEXT   NOT NULL, -- the name the upstream knows them by (LDAP login name, OIDC preferred_username)
    locator       TEXT,            -- where to read the person again (LDAP: the entry's DN)
    created_at    BIGINT NOT NULL,
    last_login_at BIGINT,
    checked_at    BIGINT NOT NULL, -- when the upstream last confirmed the person and their groups
    PRIMARY KEY (upstream, subject)
);
CREATE INDEX upstream_identities_user ON upstream_identities (user_id);
