-- The controller cluster: every controller on this database is of it. The agents its
-- controllers act on record its id, and refuse the controllers of any other cluster.
-- One row, made by the first controller that starts (see store/cluster.rs).
CREATE TABLE cluster (
    singleton BIGINT PRIMARY KEY CHECK (singleton = 1),
    id TEXT NOT NULL,
    create_time BIGINT NOT NULL
);
