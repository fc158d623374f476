-- The listing index of `durable ls --tag/--workflow/--since/--until/--limit/--cursor`: one row per
-- run, written by the engine before the facts it reflects are durable (readers check each listed
-- run against its journal). Newest first by (created_at, run_id); tags matched by containment.
CREATE TABLE durable_run_index (
    run_id     text PRIMARY KEY,
    created_at timestamptz NOT NULL,
    workflow   text NOT NULL,
    tags       jsonb NOT NULL DEFAULT '{}',
    hidden     boolean NOT NULL DEFAULT false
);
CREATE INDEX durable_run_index_newest ON durable_run_index (created_at DESC, run_id DESC);
CREATE INDEX durable_run_index_workflow ON durable_run_index (workflow, created_at DESC, run_id DESC);
CREATE INDEX durable_run_index_tags ON durable_run_index USING gin (tags jsonb_path_ops);
