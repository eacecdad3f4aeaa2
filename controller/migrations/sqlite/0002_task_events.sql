-- Every transition of a task and its subtasks, in order: what WatchTask and the SSE
-- route stream, resumable from an event's id.
CREATE TABLE task_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id BIGINT NOT NULL,
    subtask_id BIGINT,
    status TEXT NOT NULL,
    operation TEXT NOT NULL,
    at BIGINT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX task_events_task ON task_events(task_id, id);
