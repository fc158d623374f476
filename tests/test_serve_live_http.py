"""Issue 21 over HTTP against a real `durable serve`: a run's stream followed live (SSE, NDJSON,
resumed with Last-Event-ID), and a manual webhook answered by the workflow that `serve --tick`
drives in the same process, also when the same delivery reaches a second serve at once. The runs
are started in this process."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from helpers import durable_json_in_process, write_module
from test_serve_http import ServeProcess

FLOWS = """
    from durable_cli import create_webhook, define_hook, get_writable, step, workflow

    go = define_hook("go")


    @step
    def say(*words):
        out = get_writable("out")
        for word in words:
            out.write(word)


    @workflow
    def talks(doc):
        say("a", "b")
        for _ in go.create(token="go-" + doc):
            break
        say("c")
        return "done"


    @workflow
    def rsvp():
        for request in create_webhook(respond="manual", methods=["GET"]):
            request.respond(status=200, body={"reply": request["query"]["reply"][0]},
                            headers={"x-from": "workflow", "set-cookie": "durable_session=planted; Path=/"})
            return request["query"]
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, ServeProcess]]:
    cwd = tmp_path_factory.mktemp("live")
    write_module(cwd, "flows", FLOWS)
    server = ServeProcess(cwd, "--tick", "--tick-interval", "0.1s")
    yield cwd, server
    assert server.stop() == 0, server.log.read_text()


def run(cwd: Path, *args: str, **env: str) -> str:
    code, document, err = durable_json_in_process("run", *args, dir=cwd / "journals", cwd=cwd, env=env or None)
    assert code == 0 and document["status"] == "waiting", err
    return str(document["run_id"])


def sse_events(lines: Iterator[str]) -> Iterator[dict[str, str]]:
    event: dict[str, str] = {}
    for line in lines:
        if not line:
            if event:
                yield event
            event = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(": ")
            event[field] = value


def test_a_stream_is_followed_live_over_sse_until_the_run_finishes_then_resumed_and_read_as_ndjson(site: Any) -> None:
    cwd, server = site
    run_id = run(cwd, "flows:talks", "A")
    url = f"{server.url}/api/runs/{run_id}/streams/out"
    seen: list[dict[str, str]] = []
    with httpx.stream("GET", url, timeout=20) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response.iter_lines())
        seen += [next(events), next(events)]  # what was written before the run waited
        delivered = httpx.post(f"{server.url}/api/resume/go-A", json={})  # serve --tick drives it on
        assert delivered.status_code == 202
        seen += list(events)  # ... live, until the run finished
    assert [(e["id"], json.loads(e["data"])["data"]) for e in seen[:3]] == [("0", "a"), ("1", "b"), ("2", "c")]
    assert seen[3]["event"] == "end" and len(seen) == 4

    resumed = httpx.get(url, headers={"last-event-id": "1"}).text
    assert [json.loads(e["data"])["data"] for e in sse_events(iter(resumed.splitlines() + [""])) if "id" in e] == ["c"]
    lines = httpx.get(f"{url}?start=1", headers={"accept": "application/x-ndjson"}).text.splitlines()
    assert [json.loads(line)["data"] for line in lines] == ["b", "c"]
    assert httpx.get(f"{url}?start=-1").status_code == 400
    assert httpx.get(f"{server.url}/api/runs/nobody/streams/out").status_code == 404


def test_a_manual_webhook_get_is_answered_by_the_workflow_that_serve_tick_drives(site: Any) -> None:
    cwd, server = site
    run_id = run(cwd, "flows:rsvp", DURABLE_PUBLIC_URL=server.url)
    inspected = durable_json_in_process("inspect", run_id, dir=cwd / "journals", cwd=cwd)[1]
    created = next(e for e in inspected["events"] if e["type"] == "hook_created")
    url = created["webhook"]["url"]
    assert httpx.post(url, json={}).status_code == 405
    answer = httpx.get(f"{url}?reply=yes", headers={"idempotency-key": "guest-7"}, timeout=20)
    assert answer.status_code == 200 and answer.json() == {"reply": "yes"} and answer.headers["x-from"] == "workflow"
    assert "set-cookie" not in answer.headers  # a workflow's answer sets no cookie on the dashboard's origin
    again = httpx.get(f"{url}?reply=yes", headers={"idempotency-key": "guest-7"}, timeout=20)
    assert (again.status_code, again.json()) == (200, {"reply": "yes"})


def test_a_followed_stream_ends_cleanly_when_the_server_stops(tmp_path: Path) -> None:
    """SIGTERM ends a live stream at once (a complete response the client can resume from with
    Last-Event-ID), rather than leaving it to be cut off when the graceful shutdown times out."""
    write_module(tmp_path, "flows", FLOWS)
    server = ServeProcess(tmp_path)
    try:
        run_id = run(tmp_path, "flows:talks", "S")
        with httpx.stream("GET", f"{server.url}/api/runs/{run_id}/streams/out", timeout=20) as response:
            lines = response.iter_lines()
            assert next(lines).startswith("id: 0")
            server.proc.send_signal(signal.SIGTERM)
            rest = list(lines)  # raises RemoteProtocolError if the stream is cut off mid-response
        assert "event: end" not in rest  # the run goes on: the stream only paused
    finally:
        assert server.stop() == 0, server.log.read_text()


def test_a_manual_webhook_asked_through_two_serve_processes_at_once_is_delivered_once_and_both_get_its_answer(
        tmp_path: Path) -> None:
    """Two `durable serve` on one store: the same delivery (one Idempotency-Key) reaches both at once.
    The one without a tick loop holds its request open until the workflow, driven by the other's tick,
    answers; the payload is journaled once and both callers get the workflow's answer."""
    from concurrent.futures import ThreadPoolExecutor

    write_module(tmp_path, "flows", FLOWS)
    driving = ServeProcess(tmp_path, "--tick", "--tick-interval", "0.1s")
    waiting = ServeProcess(tmp_path)
    try:
        run_id = run(tmp_path, "flows:rsvp", DURABLE_PUBLIC_URL=driving.url)
        inspected = durable_json_in_process("inspect", run_id, dir=tmp_path / "journals", cwd=tmp_path)[1]
        path = next(e for e in inspected["events"] if e["type"] == "hook_created")["webhook"]["url"].split("/hooks/")[1]
        ask = lambda server: httpx.get(f"{server.url}/hooks/{path}?reply=yes",  # noqa: E731
                                       headers={"idempotency-key": "guest-9"}, timeout=20)
        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(ask, [waiting, driving]))
        for answer in answers:
            assert answer.status_code == 200 and answer.json() == {"reply": "yes"}, answer.text
            assert answer.headers["x-from"] == "workflow"
        events = durable_json_in_process("inspect", run_id, dir=tmp_path / "journals", cwd=tmp_path)[1]["events"]
        assert inspected["status"] == "waiting"
        assert sum(1 for e in events if e["type"] == "hook_payload") == 1, events  # delivered once
        assert events[-1]["type"] == "run_completed"
    finally:
        assert waiting.stop() == 0, waiting.log.read_text()
        assert driving.stop() == 0, driving.log.read_text()
