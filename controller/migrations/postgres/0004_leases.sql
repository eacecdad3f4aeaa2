-- Several controllers on one database: each unfinished task is driven by the controller
-- holding its lease. The generation grows at every claim or takeover, and every write the
-- engine makes for a task checks it, so an owner that was paused past its lease and
-- woke up changes nothing (fencing).
ALTER TABLE tasks ADD COLUMN lease_owner TEXT;
ALTER TABLE tasks ADD COLUMN lease_expires BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN lease_generation BIGINT NOT NULL DEFAULT 0;

-- The controllers that are alive (seen within a lease TTL): hosts are split between them
-- for heartbeats.
CREATE TABLE controllers (
    id TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    pid BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    seen_at BIGINT NOT NULL
);
