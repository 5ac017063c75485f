-- sdx reference API build store, version 1. Builds carry their lease: the instance
-- driving them (lease_holder), until when (lease_expires), and the fencing token that
-- grows each time the lease changes hands (lease_token).
CREATE TABLE sdx_sequences (name TEXT PRIMARY KEY, next BIGINT NOT NULL);
INSERT INTO sdx_sequences (name, next) VALUES ('builds', 1);
CREATE TABLE sdx_builds (
    id BIGINT PRIMARY KEY,
    version BIGINT NOT NULL,
    owner TEXT NOT NULL,
    status TEXT NOT NULL,
    final BOOLEAN NOT NULL,
    settled BOOLEAN NOT NULL,
    body TEXT NOT NULL,
    lease_holder TEXT,
    lease_token BIGINT NOT NULL DEFAULT 0,
    lease_expires TIMESTAMPTZ
);
CREATE INDEX sdx_builds_unsettled ON sdx_builds (id) WHERE NOT final OR NOT settled;
CREATE INDEX sdx_builds_lease_holder ON sdx_builds (lease_holder) WHERE lease_holder IS NOT NULL;
CREATE TABLE sdx_steps (
    build_id BIGINT NOT NULL REFERENCES sdx_builds (id),
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    command TEXT NOT NULL,
    start_time TEXT,
    end_time TEXT,
    code INTEGER,
    next_line BIGINT NOT NULL DEFAULT 0,
    stored_lines BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (build_id, name)
);
CREATE TABLE sdx_log_lines (
    build_id BIGINT NOT NULL,
    step TEXT NOT NULL,
    n BIGINT NOT NULL,
    t BIGINT NOT NULL,
    m TEXT NOT NULL,
    PRIMARY KEY (build_id, step, n)
);
CREATE TABLE sdx_secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL);
