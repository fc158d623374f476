"""Hostile and edge-case requests at `durable serve`'s door, against a real server process: what
it acknowledges (2xx) reaches the run, and what it cannot deliver is a 4xx, never a 500."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from helpers import durable_json_in_process
from test_serve_http import FLOWS as HTTP_FLOWS, ServeProcess, inspect, served, start_run, tick, webhook_url

FLOWS = HTTP_FLOWS + """

    @workflow
    def signed_by(verify):
        for request in create_webhook(secret_env="EDGE_SECRET", verify=verify):
            return request["json"]


    @workflow
    def hears(named):
        for request in create_webhook(headers=[named]):
            return request


    @workflow
    def answers_with(status, headers):
        for request in create_webhook(respond_with={"status": status, "headers": headers}):
            return request["json"]
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, ServeProcess]]:
    yield from served(tmp_path_factory, FLOWS, {"EDGE_SECRET": "s3cret"})


def nested(depth: int) -> bytes:
    return b"[" * depth + b"1" + b"]" * depth


def test_a_payload_as_deep_as_the_door_allows_is_delivered_once_acknowledged(site: Any) -> None:
    """The door takes a webhook body nested up to one level less than a payload may nest (the
    request holds it one level down) and a resumed payload up to the payload's depth; the inbox
    message wraps the payload one level further down, and was refused by the tick as 'nested
    deeper than 512 levels' after the 202: the run waited for ever on a payload it was told it had."""
    cwd, server = site
    run_id = start_run(cwd, server, "flows:on_webhook")
    answer = httpx.post(webhook_url(cwd, run_id), content=nested(511), headers={"content-type": "application/json"})
    assert answer.status_code == 202, answer.text
    approver = start_run(cwd, server, "flows:approve", "deep", "--id", "deep-approver")
    answer = httpx.post(f"{server.url}/api/resume/approval-deep", content=nested(512),
                        headers={"content-type": "application/json"})
    assert answer.status_code == 202, answer.text
    tick(cwd)

    run = inspect(cwd, run_id)
    assert run["status"] == "completed" and run["result"]["json"] == json_nested(511)
    run = inspect(cwd, approver)
    assert run["status"] == "completed" and run["result"] == json_nested(512)


def json_nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("verify", ["slack", "stripe", "standard-webhooks"])
def test_a_signature_timestamp_of_thousands_of_digits_is_401_not_500(site: Any, verify: str) -> None:
    """A timestamp header of 5,000 digits passed the "all digits" check and then int() refused it
    (Python's limit on digits in a string): a ValueError and a 500 with a traceback in the log."""
    cwd, server = site
    run_id = start_run(cwd, server, "flows:signed_by", verify)
    huge = "9" * 5000
    answer = httpx.post(webhook_url(cwd, run_id), content=b"{}", headers={
        "x-slack-request-timestamp": huge, "x-slack-signature": "v0=00", "stripe-signature": f"t={huge},v1=00",
        "webhook-id": "msg-1", "webhook-timestamp": huge, "webhook-signature": "v1,AAAA"})
    assert answer.status_code == 401 and "timestamp" in answer.json()["error"].lower(), answer.text
    assert "Traceback" not in server.log.read_text()
    assert inspect(cwd, run_id)["status"] == "waiting"


@pytest.mark.parametrize("action", ["retry", "wake", "fork"])
def test_an_action_body_nested_too_deep_to_parse_is_400_not_500(site: Any, action: str) -> None:
    """The run actions parsed their JSON body with a bare json.loads: a body of 100,000 `[` (well
    within the size limit) raised RecursionError, a 500 with a traceback in the log."""
    cwd, server = site
    run_id = start_run(cwd, server, "flows:on_webhook")
    answer = httpx.post(f"{server.url}/api/runs/{run_id}/{action}", content=b"[" * 100_000,
                        headers={"content-type": "application/json"})
    assert answer.status_code == 400 and "JSON object" in answer.json()["error"], answer.text
    assert "Traceback" not in server.log.read_text()
    assert inspect(cwd, run_id)["status"] == "waiting"


@pytest.mark.parametrize("options", [{"from_step": "x"}, {"from_step": True}, {"from_step": 1.5}, {"new_id": 7}])
def test_a_fork_whose_options_have_the_wrong_type_is_400_and_forks_nothing(site: Any, options: dict[str, Any]) -> None:
    """`from_step` went to the fork unchecked: "x" was a 409 saying "'<=' not supported between
    instances of 'int' and 'str'", and true or 1.5 forked the run (201); a `new_id` that is not a
    string was a 409 about an invalid run id."""
    cwd, server = site
    run_id = start_run(cwd, server, "flows:on_webhook")
    before = len(httpx.get(f"{server.url}/api/runs").json())
    answer = httpx.post(f"{server.url}/api/runs/{run_id}/fork", json=options)
    assert answer.status_code == 400 and next(iter(options)) in answer.json()["error"], answer.text
    assert len(httpx.get(f"{server.url}/api/runs").json()) == before


def test_a_client_that_hangs_up_mid_body_leaves_no_traceback_and_no_delivery(site: Any) -> None:
    """A sender that closed its connection after half of its Content-Length made read_body raise
    Starlette's ClientDisconnect, which no endpoint caught: "Exception in ASGI application" and a
    traceback in the server's log for every such client (webhooks, the API's writes, login)."""
    cwd, server = site
    run_id = start_run(cwd, server, "flows:on_webhook")
    path = "/hooks/" + webhook_url(cwd, run_id).split("/hooks/", 1)[1]
    host, port = server.url.removeprefix("http://").split(":")
    targets = [path, f"/api/runs/{run_id}/retry", "/login"]
    for target in targets:
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         f"Content-Length: 100\r\n\r\n{{\"half\": ".encode())
    for _ in targets:  # the server has seen the hang-ups by the time it answers these
        assert httpx.get(f"{server.url}/api/runs/{run_id}").status_code == 200
    assert "Traceback" not in server.log.read_text()
    run = inspect(cwd, run_id)
    assert run["status"] == "waiting" and not any(e["type"] == "hook_payload" for e in run["events"])


@pytest.mark.parametrize("query", ["until=9999-12-31T23:59:59-01:00", "since=0001-01-01T00:00:00%2B01:00"])
def test_a_listing_bound_beyond_the_years_a_datetime_holds_in_utc_is_400_not_500(site: Any, query: str) -> None:
    """`since`/`until` are converted to UTC for the listing: an instant that parses but falls after
    9999-12-31 or before 0001-01-01 in UTC raised OverflowError, a 500 with a traceback in the log."""
    cwd, server = site
    start_run(cwd, server, "flows:on_webhook")
    answer = httpx.get(f"{server.url}/api/runs?{query}")
    assert answer.status_code == 400 and query.split("=")[0] in answer.json()["error"], answer.text
    assert "Traceback" not in server.log.read_text()


@pytest.mark.parametrize("status, headers", [("ok", {}), (99999, {}), (200, {"x-reply": "a\nb"}),
                                             (200, {"content-length": "5"})])
def test_a_respond_with_that_http_cannot_send_fails_create_webhook_not_each_delivery(
        site: Any, status: Any, headers: dict[str, str]) -> None:
    """respond_with was journaled unchecked: serve stored each delivery, then could not build or
    send the answer (a 500, or a broken response), so the sender retried a payload the run had
    already taken. It is now checked as a manual answer is, when the webhook is created."""
    cwd, server = site
    code, document, err = durable_json_in_process("run", "flows:answers_with", json.dumps(status), json.dumps(headers),
                                                   dir=cwd / "journals", cwd=cwd, env={"DURABLE_PUBLIC_URL": server.url})
    assert document["status"] == "failed" and "respond_with" in json.dumps(document), (document, err)
    assert not any(e["type"] == "hook_created" for e in inspect(cwd, document["run_id"])["events"])


@pytest.mark.parametrize("path, location", [("/api/runs/", "/api/runs"), ("/runs/r-1/?from=1&to=2", "/runs/r-1?from=1&to=2"),
                                            ("/login/", "/login"), ("/api/runs/r%3F1/", "/api/runs/r%3F1")])
def test_a_trailing_slash_redirect_is_relative_whatever_the_host_header_names(site: Any, path: str,
                                                                              location: str) -> None:
    """Starlette's slash redirect was built from the request's Host header: `Host: evil.example`
    sent a browser (or a cache keyed on the path) to http://evil.example/api/runs. It is relative now."""
    _, server = site
    answer = httpx.get(server.url + path, headers={"host": "evil.example"})
    assert answer.status_code == 307 and answer.headers["location"] == location, answer.headers


def test_a_path_no_route_takes_either_way_is_404_not_a_redirect(site: Any) -> None:
    """`//evil.example/` toggled is `//evil.example`, a scheme-relative URL: never a Location."""
    _, server = site
    for path in ("//evil.example/", "/nowhere/", "/static//"):
        answer = httpx.get(server.url + path, headers={"host": "evil.example"})
        assert answer.status_code == 404 and "location" not in answer.headers, (path, answer.headers)


def test_the_dashboards_redirects_are_relative_whatever_the_host_header_names(tmp_path: Path) -> None:
    token = "a-token-long-enough-to-use"
    server = ServeProcess(tmp_path, env={"DURABLE_SERVE_TOKEN": token})
    try:
        with httpx.Client(base_url=server.url, headers={"host": "evil.example"}) as browser:
            assert browser.get("/").headers["location"] == "/login"
            assert browser.post("/login", data={"token": "wrong"}).headers["location"] == "/login?failed=1"
            signed_in = browser.post("/login", data={"token": token})
            assert signed_in.headers["location"] == "/"
            assert browser.get("/login").headers["location"] == "/"  # the client keeps the session cookie
    finally:
        assert server.stop() == 0


def test_a_webhook_answer_cannot_set_a_cookie_on_the_dashboards_origin(site: Any) -> None:
    """A workflow's answer set any header, Set-Cookie included: `durable_session=...; Path=/` from a
    webhook URL opened in the operator's browser replaced (or shadowed) the dashboard's session on
    the same origin. serve drops a webhook answer's cookies and keeps its other headers."""
    cwd, server = site
    headers = {"set-cookie": "durable_session=planted; Path=/", "x-reply": "kept"}
    run_id = start_run(cwd, server, "flows:answers_with", "200", json.dumps(headers))
    answer = httpx.post(webhook_url(cwd, run_id), json={"n": 1})
    assert answer.status_code == 200 and answer.headers["x-reply"] == "kept"
    assert "set-cookie" not in answer.headers and not answer.cookies
    tick(cwd)
    assert inspect(cwd, run_id)["result"] == {"n": 1}


HUGE_INT = b"9" * 5000


@pytest.mark.parametrize("body", [b'{"n": ' + HUGE_INT + b'}', b'{"n": 1e999}', b'[-1e400]'],
                         ids=["5000 digits", "1e999", "-1e400"])
def test_a_json_number_python_cannot_read_or_a_journal_cannot_hold_is_400_not_500(site: Any, body: bytes) -> None:
    """An integer of 5,000 digits made json.loads raise ValueError (Python's limit on digits), which
    the payload parser let out: a 500 with a traceback in the log, at /hooks/ and /api/resume/. And
    1e999 parsed as infinity, which no journal holds. Both are invalid JSON at the door now."""
    cwd, server = site
    run_id = start_run(cwd, server, "flows:on_webhook")
    answer = httpx.post(webhook_url(cwd, run_id), content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 400 and "invalid JSON" in answer.json()["error"], answer.text
    start_run(cwd, server, "flows:approve", f"huge-{len(body)}")
    answer = httpx.post(f"{server.url}/api/resume/approval-huge-{len(body)}", content=body,
                        headers={"content-type": "application/json"})
    assert answer.status_code == 400 and "invalid JSON" in answer.json()["error"], answer.text
    assert "Traceback" not in server.log.read_text()
    assert inspect(cwd, run_id)["status"] == "waiting"


@pytest.mark.parametrize("body", [b'{"n": ' + HUGE_INT + b'}', b"1e999"], ids=["5000 digits", "1e999"])
def test_a_text_body_that_only_looks_like_such_json_is_delivered_as_text(site: Any, body: bytes) -> None:
    """Sent as text/plain, such a body is text: delivered whole with `json` None (1e999 was a 400
    "cannot be delivered", and the 5,000 digits a 500)."""
    cwd, server = site
    run_id = start_run(cwd, server, "flows:on_webhook")
    answer = httpx.post(webhook_url(cwd, run_id), content=body, headers={"content-type": "text/plain"})
    assert answer.status_code == 202, answer.text
    tick(cwd)
    request = inspect(cwd, run_id)["result"]
    assert request["body"] == body.decode() and request["json"] is None


@pytest.mark.parametrize("headers, query, body, where, value", [
    pytest.param({"x-odd": "a\x01b\x7fc"}, "", b"{}", ("headers", "x-odd"), "a\x01b\x7fc", id="controls in a header"),
    pytest.param({"content-type": "text/plain"}, "", b"caf\xe9 \xff\x00", ("body",), "caf\ufffd \ufffd\x00",
                 id="invalid UTF-8 text"),
    pytest.param({}, "?a=%00&b=%ff&c=%ed%a0%80", b"{}", ("query",), {"a": ["\x00"], "b": ["\ufffd"], "c": ["\ufffd" * 3]},
                 id="NUL and bad UTF-8 in the query"),
    pytest.param({"content-type": "application/json"}, "", b'{"a": 1, "a": 2}', ("json",), {"a": 2}, id="duplicate keys"),
    pytest.param({"content-type": "application/xml"}, "", b"<a/>", ("body",), "<a/>", id="XML"),
])
def test_odd_but_deliverable_requests_are_acknowledged_and_delivered_as_documented(
        site: Any, headers: dict[str, str], query: str, body: bytes, where: tuple[str, ...], value: Any) -> None:
    """Control characters in a named header, invalid UTF-8 in a text body (replaced, U+FFFD), NUL,
    invalid UTF-8 and an encoded surrogate in the query, duplicate JSON keys (the last one wins, as
    in JavaScript's JSON.parse; `body` keeps the text as sent), a non-JSON type: each a 202, and
    the delivery holds what the docs say."""
    cwd, server = site
    run_id = start_run(cwd, server, "flows:hears", "x-odd")
    answer = httpx.post(webhook_url(cwd, run_id) + query, content=body, headers=headers)
    assert answer.status_code == 202, answer.text
    tick(cwd)
    delivered = inspect(cwd, run_id)["result"]
    for key in where:
        delivered = delivered[key]
    assert delivered == value


@pytest.mark.parametrize("limit", ["9" * 5000, "\u00b2", "-1", "1e3"], ids=["5000 digits", "superscript 2", "-1", "1e3"])
def test_a_listing_limit_that_is_not_a_whole_number_is_400_naming_limit(site: Any, limit: str) -> None:
    """`limit` went to int(): 5,000 digits answered Python's own advice ("use
    sys.set_int_max_str_digits()") and "²" (a digit to str.isdigit) "invalid literal for int()"."""
    _, server = site
    answer = httpx.get(f"{server.url}/api/runs", params={"limit": limit})
    assert answer.status_code == 400 and answer.json()["error"].startswith("limit must be a whole number"), answer.text
    assert httpx.get(f"{server.url}/api/runs", params={"limit": "2"}).status_code == 200


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_an_empty_body_sent_as_json_is_delivered_with_json_none(site: Any, method: str) -> None:
    """A client that labels every request `application/json` (a GET, a bodiless ping) was answered
    400 "the payload is empty" and retried for ever: an empty body is no body, whatever its type."""
    cwd, server = site
    run_id = start_run(cwd, server, "flows:on_webhook")
    answer = httpx.request(method, webhook_url(cwd, run_id), headers={"content-type": "application/json"})
    assert answer.status_code == 202, answer.text
    tick(cwd)
    request = inspect(cwd, run_id)["result"]
    assert (request["method"], request["body"], request["json"]) == (method, "", None)


@pytest.mark.parametrize("damage", ["a FIFO", "garbage"])
def test_a_delivery_to_a_run_whose_journal_cannot_be_read_is_503_and_the_others_are_served(
        site: Any, damage: str) -> None:
    """webhook_of (and the enqueue) raised the store's error for a run whose journal was a FIFO or
    damaged: a 500 with a traceback in the log. Nothing is acknowledged: 503 with Retry-After (the
    reason, which names paths, goes to the log and to an authorised caller only), and the next
    run's webhook is served."""
    import os

    cwd, server = site
    broken = start_run(cwd, server, "flows:on_webhook")
    url = webhook_url(cwd, broken)
    start_run(cwd, server, "flows:approve", f"broken-{damage[0]}", "--id", f"broken-approver-{damage[0]}")
    for run_id in (broken, f"broken-approver-{damage[0]}"):
        journal = cwd / "journals" / "runs" / f"{run_id}.jsonl"
        journal.unlink()
        os.mkfifo(journal, 0o600) if damage == "a FIFO" else journal.write_bytes(b"garbage\n")
    answer = httpx.post(url, json={"n": 1})
    assert answer.status_code == 503 and answer.headers["retry-after"], answer.text
    assert "journals" not in answer.text  # no path of the server's to an anonymous sender
    resumed = httpx.post(f"{server.url}/api/resume/approval-broken-{damage[0]}", json={"n": 1})
    assert resumed.status_code == 503 and "journal" in resumed.json()["error"], resumed.text
    log = server.log.read_text()
    assert "Traceback" not in log and "delivery not stored: " in log and broken in log
    healthy = start_run(cwd, server, "flows:on_webhook")
    assert httpx.post(webhook_url(cwd, healthy), json={"n": 2}).status_code == 202


@pytest.mark.parametrize("status, headers", [(200, {"x-reply": "a\nb"}), (200, {"content-length": "5"}), (99999, {})],
                         ids=["line break in a header", "framing header", "status 99999"])
def test_a_journaled_answer_http_cannot_carry_is_logged_and_the_stored_delivery_answered_202(
        site: Any, monkeypatch: pytest.MonkeyPatch, status: int, headers: dict[str, str]) -> None:
    """A respond_with journaled before create_webhook checked it: serve stored the delivery, then
    h11 refused the answer (a traceback, and the connection closed with no reply), so the sender
    sent the payload again. The stored delivery is now answered 202 and the reason logged."""
    cwd, server = site
    monkeypatch.setattr("durable_cli._webhooks.check_response", lambda *args: None)  # as older versions
    run_id = start_run(cwd, server, "flows:answers_with", json.dumps(status), json.dumps(headers))
    answer = httpx.post(webhook_url(cwd, run_id), json={"n": 1})
    assert answer.status_code == 202 and answer.json() == {"run_id": run_id, "delivery": "queued"}, answer.text
    log = server.log.read_text()
    assert "Traceback" not in log and f"run {run_id}: the webhook's answer cannot be sent" in log
    tick(cwd)
    assert inspect(cwd, run_id)["result"] == {"n": 1}


@pytest.mark.parametrize("cookie, delivered", [("durable_session=1900000000.abc; theme=dark", "theme=dark"),
                                               ("theme=dark;durable_session=1900000000.abc;lang=fr", "theme=dark; lang=fr"),
                                               ("durable_session=1900000000.abc", None)],
                         ids=["first", "between others", "alone"])
def test_a_webhook_that_names_cookie_never_receives_the_dashboards_session(
        site: Any, cookie: str, delivered: str | None) -> None:
    """A browser sends the dashboard's session cookie to /hooks/ too (same origin): a webhook made
    with headers=["cookie"], opened by the signed-in operator, journaled their session, which
    opens the dashboard for 30 days to whoever reads the journal. The other cookies still arrive."""
    cwd, server = site
    run_id = start_run(cwd, server, "flows:hears", "cookie")
    assert httpx.post(webhook_url(cwd, run_id), json={}, headers={"cookie": cookie}).status_code == 202
    tick(cwd)
    assert inspect(cwd, run_id)["result"]["headers"].get("cookie") == delivered
