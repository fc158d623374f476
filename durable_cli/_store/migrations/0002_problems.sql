-- Why the last tick could not drive a run (its workflow cannot be imported, its journal cannot be
-- read): shown by `durable ls` and `durable inspect`, cleared once a tick drives the run.
CREATE TABLE durable_problems (
    run_id   text PRIMARY KEY,
    reason   text NOT NULL,
    noted_at timestamptz NOT NULL DEFAULT now()
);
