-- Throttle counts and the addresses each name signed in from, shared by every replica.
-- Times are Unix milliseconds, except updated_at and at (seconds, for purging).
CREATE TABLE throttle_counts (
    key           TEXT   PRIMARY KEY,
    failures      BIGINT NOT NULL,
    leaked_at     BIGINT NOT NULL,
    blocked_until BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE TABLE known_sign_ins (
    key TEXT   PRIMARY KEY,
    at  BIGINT NOT NULL
);
