-- Agent packages: the ocp-agent binaries that upgrades push to hosts. A package's
-- content is kept in 1 MiB chunks, written as the upload streams in, so that neither
-- an upload nor a read ever holds a whole binary in memory. A row with complete = 0 is
-- an upload in progress: no read shows it, and its upload_time is when it last
-- received a chunk, so that one its controller abandoned (by crashing) can be swept.
-- One version may have one package per architecture.
CREATE TABLE agent_packages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    version TEXT NOT NULL,
    arch TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL,
    uploaded_by TEXT NOT NULL,
    upload_time BIGINT NOT NULL,
    complete BIGINT NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX agent_packages_version_arch ON agent_packages (version, arch) WHERE complete = 1;

CREATE TABLE agent_package_chunks (
    package_id BIGINT NOT NULL REFERENCES agent_packages(id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (package_id, seq)
);
