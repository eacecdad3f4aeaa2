-- The agent version an upgrade task installs, so that the package of that version is
-- not deleted while the task may still push it (a failed task can be retried).
ALTER TABLE tasks ADD COLUMN agent_version TEXT;
CREATE INDEX tasks_agent_version ON tasks (agent_version);
