"""The dashboard rendered on the server (issue 21): it reads with JavaScript off, the runs list
filters, counts and pages by its URL, and the trace stays readable for a run of 1,000 steps."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from starlette.testclient import TestClient

from durable_cli import define_hook, get_writable, sleep, step, workflow
from durable_cli._client import create_run
from durable_cli._engine.run import Options
from durable_cli._payloads import DEFAULT_LIMIT
from durable_cli._serve.app import create_app
from durable_cli._serve.auth import Guard
from durable_cli._serve.listing import STATUSES
from durable_cli._serve.trace import MAX_ROWS, render, rows_of
from durable_cli._store.base import Store
from durable_cli._timeparse import parse_instant, utcnow

approval = define_hook("approval")


@step(retry_delay="0s")
def flaky(n: int) -> int:
    from durable_cli import get_step_metadata

    get_writable("progress").write({"n": n, "attempt": get_step_metadata().attempt})
    if get_step_metadata().attempt == 1:
        raise ConnectionError("first attempt fails")
    return n


@workflow
def waits(doc: str) -> Any:
    flaky(1)
    for decision in approval.create(token=f"approval-{doc}"):
        return decision
    return None


@workflow
def naps() -> None:
    sleep("1h")


def now() -> datetime:
    return datetime.now(timezone.utc)


def run_ids(html: str) -> list[str]:
    return re.findall(r'<tr data-run-id="([^"]+)"', html)


def test_the_runs_list_filters_counts_and_pages_in_its_url_without_javascript(served: Any) -> None:
    store, client = served
    for n in range(3):
        create_run(store, waits, (f"d{n}",), {}, f"wait-{n}", now, Options())
    create_run(store, naps, (), {}, "nap-0", now, Options())

    page = client.get("/").text
    assert sorted(run_ids(page)) == ["nap-0", "wait-0", "wait-1", "wait-2"]
    assert re.search(r'data-status="waiting"[^>]*>.*?<b class="count">3</b>', page)
    assert re.search(r'data-status="sleeping"[^>]*>.*?<b class="count">1</b>', page)
    assert "<script" in page and 'id="filters"' in page  # the script only makes it live

    assert run_ids(client.get("/?status=sleeping").text) == ["nap-0"]
    assert sorted(run_ids(client.get("/?workflow=waits").text)) == ["wait-0", "wait-1", "wait-2"]
    assert run_ids(client.get("/?since=2000-01-01T00:00:00Z&until=2000-01-02T00:00:00Z").text) == []
    assert len(run_ids(client.get("/?since=1h").text)) == 4
    first, second = client.get("/?per_page=3").text, client.get("/?per_page=3&page=2").text
    assert len(run_ids(first)) == 3 and len(run_ids(second)) == 1 and 'rel="next"' in first
    assert "page 2 of 2" in second and 'rel="prev"' in second
    assert client.get("/?status=nonsense").status_code == 400
    assert client.get("/?since=yesterday-ish").status_code == 400

    counted = client.get("/api/counts?workflow=waits&status=sleeping&per_page=2").json()
    assert counted["counts"]["waiting"] == 3 and (counted["total"], counted["pages"]) == (0, 1)
    counted = client.get("/api/counts?per_page=3").json()
    assert parse_instant(counted.pop("as_of")) <= utcnow()  # the instant of the runs list's snapshot
    assert counted == {"counts": {**dict.fromkeys(STATUSES, 0), "waiting": 3, "sleeping": 1}, "total": 4, "pages": 2}


def test_a_run_page_shows_facts_trace_timeline_and_stream_without_javascript(served: Any) -> None:
    store, client = served
    create_run(store, waits, ("A",), {}, "doc-A", now, Options())
    page = client.get("/runs/doc-A").text
    assert 'id="run-status"' in page and "waiting" in page
    assert '<svg class="trace"' in page and 'class="bar attempt failed"' in page and 'class="bar retry"' in page
    assert 'class="bar wait current"' in page and '<line class="now"' in page  # the hook wait it is in now
    assert "2 attempts" in page and "first attempt fails" in page and "approval-A" in page
    assert 'data-stream="progress"' in page and "&quot;attempt&quot;: 2" in page
    assert 'form class="deliver" data-token="approval-A"' in page
    assert client.get("/runs/nobody").status_code == 404


def thousand_steps() -> list[dict[str, Any]]:
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    at = lambda s: (t0 + timedelta(seconds=s)).isoformat()  # noqa: E731
    events: list[dict[str, Any]] = [{"type": "run_started", "at": at(0)}]
    for pos in range(1000):
        events.append({"type": "step_started", "pos": pos, "name": f"s{pos % 7}", "attempt": 1, "at": at(pos)})
        events.append({"type": "step_completed", "pos": pos, "name": f"s{pos % 7}", "at": at(pos + 0.5)})
    events.append({"type": "run_completed", "at": at(1000)})
    return events


def test_a_run_of_1000_steps_is_traced_in_at_most_50_bands_that_zoom_in() -> None:
    events = thousand_steps()
    rows, length, now = rows_of(events, datetime.now(timezone.utc))
    assert len(rows) == 1000 and length == 1000 and now is None  # finished: no "now" on its axis
    whole = render(events, datetime.now(timezone.utc))
    assert whole.count('<g class="row') == MAX_ROWS and whole.count("<rect") == 1000
    assert 'href="?from=0&amp;to=19#trace"' in whole
    zoomed = render(events, datetime.now(timezone.utc), 0, 19)
    assert zoomed.count('<g class="row kind-step"') == 20 and "Whole run" in zoomed
    assert '<rect class="bar attempt" x="260.0"' in zoomed  # the zoomed axis starts at call 0
    assert 'text-anchor="end">20 s</text>' in zoomed  # ... and ends with call 19 (19.5 s)


def test_the_table_below_the_trace_of_1000_steps_is_50_rows_that_zoom_in() -> None:
    from durable_cli._inspection import timeline
    from durable_cli._serve.pages import _timeline

    entries = timeline(thousand_steps())
    table = _timeline(entries, (None, None))
    assert table.count("<tr") == MAX_ROWS and '<a href="?from=0&amp;to=19#trace">0–19</a>' in table
    assert "20 completed" in table
    assert _timeline(entries, (40, 44)).count('<tr class="kind-step"') == 5


ODD = ["/?page=%C2%B2", "/?per_page=%D9%A1", "/?since=%ED%A0%80", "/?tag=%00", "/api/counts?until=%FF",
       "/api/runs/done-1/streams/out?start=%C2%B2", "/api/runs/done-1/streams/%0A",
       "/api/runs/done-1/streams/" + "x" * 101]


def test_odd_query_strings_stream_names_and_last_event_ids_are_a_400_never_a_500(tmp_path: Any) -> None:
    from durable_cli._store.files import FileStore

    store = FileStore(str(tmp_path / "journals"))
    create_run(store, naps, (), {}, "done-1", now, Options())
    app = create_app(store, Guard(None, "127.0.0.1", "http://127.0.0.1:8080"), DEFAULT_LIMIT)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        for path in ODD:
            assert client.get(path).status_code == 400, path
        odd_id = {"last-event-id": "²".encode("latin-1")}
        assert client.get("/api/runs/done-1/streams/out", headers=odd_id).status_code == 400  # type: ignore[arg-type]
    store.close()


def test_the_trace_escapes_a_wait_position_taken_from_the_journal() -> None:
    """A suspended run's `waits` are not checked by the journal reader: a position there that is
    markup (a journal written by another member of a shared group) is shown as text."""
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    events = [{"type": "run_started", "at": t0.isoformat()},
              {"type": "run_suspended", "at": (t0 + timedelta(seconds=1)).isoformat(),
               "waits": [{"pos": '"><svg onload=alert(1)>', "kind": "hook"}]}]
    shown = render(events, t0 + timedelta(seconds=2))
    assert "<svg onload" not in shown and 'data-pos="&quot;&gt;&lt;svg onload=alert(1)&gt;"' in shown


def test_published_events_are_shown_escaped_by_key() -> None:
    from durable_cli._serve.pages import _published

    shown = _published({"progress": 50, "<b>stage</b>": {"name": "<script>"}})
    assert "progress" in shown and "50" in shown
    assert "<script>" not in shown and "&lt;b&gt;stage&lt;/b&gt;" in shown
    assert "No published events" in _published({})


def test_without_javascript_the_deliver_form_posts_the_payload_to_the_api_with_the_csrf_token(served: Any) -> None:
    store, client = served
    create_run(store, waits, ("F",), {}, "doc-F", now, Options())
    page = client.get("/runs/doc-F").text
    form = re.search(r'<form class="deliver"[^>]*action="([^"]+)">.*?name="csrf_token" value="([^"]+)"', page)
    assert form is not None and form.group(1) == "/api/resume/approval-F"
    sent = client.post(form.group(1), data={"csrf_token": form.group(2), "payload": '{"ok": true}'},
                       headers={"origin": "http://127.0.0.1"})
    assert sent.status_code == 202 and sent.json()["delivery"] == "queued"
    forged = client.post(form.group(1), data={"csrf_token": "guess", "payload": "{}"}, headers={"origin": "http://127.0.0.1"})
    assert forged.status_code == 403
