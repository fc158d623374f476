-- The first schema of the PostgreSQL store. Only durable_events is the truth (append-only: rows
-- are inserted by a fenced flush and deleted only by prune); every other table is an index or
-- a mailbox beside it.

-- Every claim on a run takes a new number from this sequence: the fencing token. Numbers are
-- never reused, even when a pruned run id is created again.
CREATE SEQUENCE durable_claims;

CREATE TABLE durable_runs (
    run_id      text PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now(),
    claim       bigint NOT NULL DEFAULT 0,   -- the current holder's fencing token
    owner       text,                        -- worker holding the run, NULL when released
    lease_until timestamptz                  -- the holder's claim lapses after this instant
);

CREATE TABLE durable_events (
    run_id text NOT NULL,
    seq    bigint NOT NULL,
    body   text NOT NULL,                    -- the exact journal line (CRC included), no newline
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE durable_due (
    run_id text PRIMARY KEY,
    due_at timestamptz NOT NULL
);
CREATE INDEX durable_due_at ON durable_due (due_at, run_id);

CREATE TABLE durable_tokens (
    token_hash text PRIMARY KEY,             -- sha256 of the token: tokens may be long
    token      text NOT NULL,
    run_id     text NOT NULL
);

CREATE TABLE durable_inbox (
    id         bigserial PRIMARY KEY,
    run_id     text NOT NULL,
    message    text NOT NULL,                -- JSON text as posted
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX durable_inbox_run ON durable_inbox (run_id, id);

CREATE TABLE durable_rejected (
    id          bigserial PRIMARY KEY,
    run_id      text NOT NULL,
    message_id  text NOT NULL,
    message     text,                        -- NULL when the message was already gone
    reason      text NOT NULL,
    rejected_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE durable_cancel (
    run_id       text PRIMARY KEY,
    requested_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE durable_streams (
    run_id text NOT NULL,
    name   text NOT NULL,
    idx    bigint NOT NULL,                  -- 0-based position in the stream
    body   text NOT NULL,                    -- a journal-encoded chunk, no newline
    PRIMARY KEY (run_id, name, idx)
);

CREATE TABLE durable_schedules (
    name  text PRIMARY KEY,
    state text NOT NULL                      -- a JSON object as saved
);
