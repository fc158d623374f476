"""`durable stats` on PostgreSQL: the figures of stats.py computed in SQL, next to the data.

Each journal line is text in `durable_events.body`; the same anchored patterns as the file store
read `type`, `at` and `pos` from the head of a line, so no result or payload is parsed as JSON.
Counting and percentiles (`percentile_disc`: the nearest-rank rule) happen in the database; only
one row per workflow (and status) comes back.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .pg_schema import Db
from .stats import CRASHED, Tally

_EVENTS = r"""
WITH ev AS (
    SELECT run_id, seq,
        substring(body from '^\{"type":"([a-z_]+)"') AS type,
        substring(body from '^\{"type":"[a-z_]+","seq":[0-9]+,"at":"([^"]+)"')::timestamptz AS at,
        substring(body from '^\{"type":"[a-z_]+","seq":[0-9]+,"at":"[^"]+","pos":([0-9]+)') AS pos,
        CASE WHEN body LIKE '{"type":"run\_suspended",%%' THEN substring(body from '"status":"([a-z_]+)"') END AS status,
        CASE WHEN body LIKE '{"type":"step\_failed",%%' THEN substring(body from '"error":\{"type":"((?:[^"\\]|\\.)*)"') END AS error_type
    FROM durable_events
),
runs AS (
    SELECT run_id, substring(body from ',"name":"((?:[^"\\]|\\.)*)"') AS name,
           substring(body from '"workflow":"([^"]*)"') AS ref
    FROM durable_events WHERE seq = 1
)
"""

# a run's status from its last event, as stats.status_of reads it
_STATUS = """
CASE WHEN l.type = 'run_completed' THEN 'completed' WHEN l.type = 'run_failed' THEN 'failed'
     WHEN l.type = 'run_cancelled' THEN 'cancelled' WHEN l.type = 'run_migrated' THEN 'migrated'
     WHEN l.type = 'run_suspended' THEN coalesce(l.status, 'running') WHEN l.type = 'run_queued' THEN 'queued'
     WHEN l.type IN ('hook_payload', 'child_finished') THEN 'waiting' ELSE 'running' END
"""
_MARKER = "(type = 'run_queued' OR (type = 'run_suspended' AND status = 'queued'))"

_RUNS = _EVENTS + f"""
, last AS (SELECT DISTINCT ON (run_id) run_id, type, status, at, {_MARKER} AS queued
           FROM ev ORDER BY run_id, seq DESC)
SELECT r.name, r.ref, {_STATUS} AS state, count(*), count(*) FILTER (WHERE l.queued)
FROM last l JOIN runs r USING (run_id)
WHERE %(since)s::timestamptz IS NULL OR l.at >= %(since)s
GROUP BY 1, 2, 3
"""

_STEPS = _EVENTS + """
, st AS (
    SELECT run_id, type, at, error_type, lag(type) OVER w AS before, lag(at) OVER w AS began
    FROM ev WHERE type IN ('step_started', 'step_completed', 'step_failed') AND pos IS NOT NULL
    WINDOW w AS (PARTITION BY run_id, pos ORDER BY seq)
), ended AS (
    SELECT run_id, type, CASE WHEN before = 'step_started' AND coalesce(error_type, '') <> %(crashed)s
                              THEN extract(epoch FROM at - began)::float8 END AS seconds
    FROM st WHERE type <> 'step_started' AND (%(since)s::timestamptz IS NULL OR at >= %(since)s)
)
SELECT r.name, r.ref, count(*), count(*) FILTER (WHERE e.type = 'step_failed'),
       percentile_disc(0.5) WITHIN GROUP (ORDER BY e.seconds),
       percentile_disc(0.95) WITHIN GROUP (ORDER BY e.seconds),
       percentile_disc(0.99) WITHIN GROUP (ORDER BY e.seconds)
FROM ended e JOIN runs r USING (run_id)
GROUP BY 1, 2
"""

_QUEUE = _EVENTS + f"""
, marked AS (
    SELECT run_id, {_MARKER} AS queued, at, lead(at) OVER (PARTITION BY run_id ORDER BY seq) AS left_at
    FROM ev
), waits AS (
    SELECT run_id, extract(epoch FROM left_at - at)::float8 AS seconds
    FROM marked WHERE queued AND left_at IS NOT NULL
                      AND (%(since)s::timestamptz IS NULL OR left_at >= %(since)s)
)
SELECT r.name, r.ref, w.seconds FROM waits w JOIN runs r USING (run_id)
"""


def _name(raw: str | None) -> str:
    import json

    return str(json.loads(f'"{raw}"')) if raw else ""


def journal_stats(db: Db, since: datetime | None) -> dict[str, Tally]:
    """The figures of every workflow (stats.py's rules), from three queries."""
    params: dict[str, Any] = {"since": since, "crashed": CRASHED}
    tallies: dict[str, Tally] = {}

    def tally(name: str | None, ref: str | None) -> Tally:
        found = tallies.setdefault(_name(name), Tally())
        found.ref = ref or found.ref
        return found

    for name, ref, state, count, queued in db.rows(_RUNS, params):
        entry = tally(name, ref)
        entry.runs[state] += count
        entry.queued_now += queued
    for name, ref, attempts, failures, p50, p95, p99 in db.rows(_STEPS, params):
        entry = tally(name, ref)
        entry.attempts, entry.failures = attempts, failures
        entry.step_percentiles = None if p50 is None else {"p50": p50, "p95": p95, "p99": p99}
    for name, ref, seconds in db.rows(_QUEUE, params):
        tally(name, ref).queue_waits.append(seconds)
    return tallies
