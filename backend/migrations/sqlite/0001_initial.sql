-- Postern's initial schema. Times are Unix seconds; tokens, codes and session ids are stored only as SHA-256.

CREATE TABLE users (
    id             INTEGER PRIMARY KEY,
    username       TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    display_name   TEXT    NOT NULL,
    email          TEXT,
    email_verified INTEGER NOT NULL DEFAULT 0,
    password_hash  TEXT    NOT NULL,
    disabled       INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL
);

CREATE TABLE user_groups (
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name    TEXT    NOT NULL,
    PRIMARY KEY (user_id, name)
) WITHOUT ROWID;

CREATE TABLE clients (
    id                        TEXT    PRIMARY KEY,
    name                      TEXT    NOT NULL,
    secret_hash               TEXT,
    redirect_uris             TEXT    NOT NULL, -- JSON array
    post_logout_redirect_uris TEXT    NOT NULL, -- JSON array
    scopes                    TEXT    NOT NULL, -- JSON array
    public                    INTEGER NOT NULL,
    groups_claim              INTEGER NOT NULL,
    require_pkce              INTEGER NOT NULL,
    refresh_tokens            INTEGER NOT NULL,
    source                    TEXT    NOT NULL CHECK (source IN ('config', 'cli')),
    created_at                INTEGER NOT NULL
);

CREATE TABLE signing_keys (
    kid         TEXT    PRIMARY KEY,
    alg         TEXT    NOT NULL,
    private_key BLOB    NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE authorization_requests (
    id             TEXT    PRIMARY KEY,
    client_id      TEXT    NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    redirect_uri   TEXT    NOT NULL,
    scope          TEXT    NOT NULL,
    state          TEXT,
    nonce          TEXT,
    code_challenge TEXT,
    expires_at     INTEGER NOT NULL
);

CREATE TABLE sessions (
    id_hash    BLOB    PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    auth_time  INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;

-- One authorization: its code and, through access_tokens and refresh_tokens, every token from it.
CREATE TABLE grants (
    id              INTEGER PRIMARY KEY,
    client_id       TEXT    NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    user_id         INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    scope           TEXT    NOT NULL,
    nonce           TEXT,
    auth_time       INTEGER NOT NULL,
    redirect_uri    TEXT    NOT NULL,
    code_hash       BLOB    NOT NULL UNIQUE,
    code_challenge  TEXT,
    code_expires_at INTEGER NOT NULL,
    code_used_at    INTEGER,
    revoked_at      INTEGER,
    created_at      INTEGER NOT NULL
);
CREATE INDEX grants_client ON grants (client_id);
CREATE INDEX grants_user ON grants (user_id);

CREATE TABLE access_tokens (
    hash       BLOB    PRIMARY KEY,
    grant_id   INTEGER NOT NULL REFERENCES grants (id) ON DELETE CASCADE,
    scope      TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX access_tokens_grant ON access_tokens (grant_id);

CREATE TABLE refresh_tokens (
    hash       BLOB    PRIMARY KEY,
    grant_id   INTEGER NOT NULL REFERENCES grants (id) ON DELETE CASCADE,
    scope      TEXT    NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
) WITHOUT ROWID;
CREATE INDEX refresh_tokens_grant ON refresh_tokens (grant_id);
