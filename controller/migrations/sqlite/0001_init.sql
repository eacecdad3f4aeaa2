-- Times are Unix milliseconds and flags are 0/1 integers, so that the same
-- queries read and write both SQLite and PostgreSQL through sqlx's Any driver.
CREATE TABLE hosts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    inner_ip_address TEXT NOT NULL,
    agent_port BIGINT NOT NULL,
    status TEXT NOT NULL,
    last_available_time BIGINT,
    agent_version TEXT NOT NULL DEFAULT '',
    install_home TEXT NOT NULL DEFAULT '',
    log_home TEXT NOT NULL DEFAULT '',
    agent_status TEXT NOT NULL DEFAULT 'UNKNOWN',
    create_time BIGINT NOT NULL,
    update_time BIGINT NOT NULL,
    UNIQUE (inner_ip_address, agent_port)
);

CREATE TABLE agent_processes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    host_id BIGINT NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
    alias TEXT NOT NULL,
    pid BIGINT NOT NULL,
    user_name TEXT NOT NULL,
    start_command TEXT NOT NULL,
    ports TEXT NOT NULL,
    elapsed_time BIGINT NOT NULL,
    last_active_time BIGINT,
    status TEXT NOT NULL,
    operable BIGINT NOT NULL,
    log_file_pattern TEXT NOT NULL,
    create_time BIGINT NOT NULL,
    update_time BIGINT NOT NULL,
    UNIQUE (host_id, alias)
);

CREATE TABLE tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    creator TEXT NOT NULL,
    executor TEXT NOT NULL,
    host_id BIGINT,
    operation TEXT NOT NULL,
    status TEXT NOT NULL,
    prohibit_rollback BIGINT NOT NULL,
    context TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    start_time BIGINT NOT NULL,
    finish_time BIGINT
);
CREATE INDEX tasks_status ON tasks(status);

CREATE TABLE subtasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id BIGINT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    series_id BIGINT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    class_name TEXT NOT NULL,
    step TEXT NOT NULL,
    host_id BIGINT,
    operation TEXT NOT NULL,
    status TEXT NOT NULL,
    parallel_idx BIGINT NOT NULL,
    timeout_secs BIGINT NOT NULL,
    run_time BIGINT NOT NULL,
    executor TEXT,
    start_time BIGINT,
    finish_time BIGINT,
    prohibit_rollback BIGINT NOT NULL
);
CREATE INDEX subtasks_task ON subtasks(task_id);

CREATE TABLE subtask_edges (
    task_id BIGINT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    upstream_id BIGINT NOT NULL,
    downstream_id BIGINT NOT NULL,
    PRIMARY KEY (upstream_id, downstream_id)
);
CREATE INDEX subtask_edges_task ON subtask_edges(task_id);

CREATE TABLE subtask_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id BIGINT NOT NULL,
    subtask_id BIGINT NOT NULL,
    at BIGINT NOT NULL,
    trace_id TEXT NOT NULL,
    line TEXT NOT NULL
);
CREATE INDEX subtask_logs_subtask ON subtask_logs(subtask_id);

-- One row per host inside an unfinished task's operation: the primary key makes
-- taking the lock and creating the task one atomic step.
CREATE TABLE host_locks (
    host_id BIGINT PRIMARY KEY,
    task_id BIGINT NOT NULL
);
