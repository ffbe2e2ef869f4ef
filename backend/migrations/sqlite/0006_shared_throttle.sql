-- Throttle counts and the addresses each name signed in from, in the store rather than in one
-- process's memory: they survive restarts, and every process sharing the store sees the same ones.
-- Times are Unix milliseconds, except updated_at and at (seconds, for purging).
CREATE TABLE throttle_counts (
    key           TEXT    PRIMARY KEY,
    failures      INTEGER NOT NULL,
    leaked_at     INTEGER NOT NULL,
    blocked_until INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE known_sign_ins (
    key TEXT    PRIMARY KEY,
    at  INTEGER NOT NULL
) WITHOUT ROWID;
