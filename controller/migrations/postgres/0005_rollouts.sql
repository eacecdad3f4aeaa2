-- Rolling tasks: the rollout they go by (JSON, NULL for stage-wise tasks), whether an
-- operator or the canary holds them before their next batch, and whether the canary's
-- pause already happened (it happens once, across restarts and retries).
ALTER TABLE tasks ADD COLUMN rollout TEXT;
ALTER TABLE tasks ADD COLUMN paused BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN canary_held BIGINT NOT NULL DEFAULT 0;
