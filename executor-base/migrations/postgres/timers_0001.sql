-- sdx timer store, version 1: one pending deadline per build, claimed by one process
-- before it fires (claimed_by, claimed_until; a claim that outlives its process expires).
CREATE TABLE sdx_timers (
    build_id BIGINT PRIMARY KEY,
    job_id BIGINT NOT NULL,
    deadline_ms BIGINT NOT NULL,
    timeout_minutes INTEGER NOT NULL,
    claimed_by TEXT,
    claimed_until TIMESTAMPTZ
);
CREATE INDEX sdx_timers_due ON sdx_timers (deadline_ms);
