-- Flow control (docs/queues.md): per queue, the runs it counts as started, the runs waiting to
-- start, and the starts inside the rate window. Every change to one queue happens in a
-- transaction holding that queue's advisory lock, so limits hold across any number of workers.
CREATE TABLE durable_queue_started (
    run_id     text PRIMARY KEY,
    queue      text NOT NULL,
    key        text
);
CREATE INDEX durable_queue_started_queue ON durable_queue_started (queue, key);

CREATE TABLE durable_queue_waiting (
    run_id      text PRIMARY KEY,
    queue       text NOT NULL,
    key         text,
    priority    integer NOT NULL,
    seq         bigserial,
    enqueued_at timestamptz NOT NULL DEFAULT now()
);
-- Admission reads waiting runs in this order, and no further than it can start.
CREATE INDEX durable_queue_waiting_order ON durable_queue_waiting (queue, priority, seq);

CREATE TABLE durable_queue_rate (
    queue      text NOT NULL,
    run_id     text NOT NULL,
    started_at timestamptz NOT NULL
);
CREATE INDEX durable_queue_rate_window ON durable_queue_rate (queue, started_at);
