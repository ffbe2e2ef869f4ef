-- Sessions expire after an idle time as well as an absolute one: remember when each was last used.
ALTER TABLE sessions ADD COLUMN last_seen INTEGER NOT NULL DEFAULT 0;
UPDATE sessions SET last_seen = created_at;
