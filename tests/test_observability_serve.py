"""`durable serve --metrics` and `--log-format json` (issue 23): a real server process with its tick
loop, /metrics parsed by prometheus_client's parser, every stderr line one JSON object."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("opentelemetry.sdk")
parser = pytest.importorskip("prometheus_client.parser")

from helpers import DURABLE, durable, durable_env, spawn, write_module  # noqa: E402

FLOWS = """
from durable_cli import sleep, step, workflow


@step
def add(a, b):
    return a + b


@workflow
def short_nap(x):
    y = add(x, 1)
    sleep("300ms")
    return add(y, 1)
"""
LOG_KEYS = {"time", "level", "run_id", "workflow", "event", "message"}


def families(text: str) -> dict[str, Any]:
    return {family.name: family for family in parser.text_string_to_metric_families(text)}


def sample(found: dict[str, Any], family: str, name: str, **labels: str) -> float | None:
    for entry in found[family].samples if family in found else ():
        if entry.name == name and all(entry.labels.get(k) == v for k, v in labels.items()):
            return float(entry.value)
    return None


def test_metrics_and_json_logs_of_a_serving_process(tmp_path: Path) -> None:
    write_module(tmp_path, "flows", FLOWS)
    stderr = tmp_path / "serve.err"
    with open(stderr, "wb") as err:
        proc = spawn([DURABLE, "--dir", str(tmp_path / "journals"), "serve", "--port", "0", "--metrics", "--tick",
             "--tick-interval", "0.1s", "--log-format", "json", "--auth-token", "t0ken-for-the-tests"],
            cwd=tmp_path, env=durable_env(), stdout=subprocess.PIPE, stderr=err)
    try:
        url = None
        for _ in range(150):  # the listening record, as JSON on stderr
            lines = stderr.read_text().splitlines()
            listening = [json.loads(line) for line in lines if '"serve_listening"' in line]
            if listening:
                url = listening[0]["message"].rsplit(" ", 1)[1].rstrip("/")
                break
            time.sleep(0.1)
        assert url is not None, stderr.read_text()
        code, out, err = durable("run", "flows:short_nap", "1", dir=tmp_path / "journals", cwd=tmp_path)
        assert code == 0 and "sleeping" in out, err
        assert httpx.get(f"{url}/metrics").status_code == 401  # the API's rules: a token is set
        auth = {"authorization": "Bearer t0ken-for-the-tests"}
        found: dict[str, Any] = {}
        for _ in range(100):
            response = httpx.get(f"{url}/metrics", headers=auth)
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
            found = families(response.text)
            # the journal says completed a moment before the run's due entry is dropped
            if (sample(found, "durable_runs", "durable_runs", status="completed") == 1
                    and sample(found, "durable_runs_due", "durable_runs_due") == 0):
                break
            time.sleep(0.1)
        assert sample(found, "durable_runs", "durable_runs", status="completed") == 1
        assert sample(found, "durable_runs", "durable_runs", status="sleeping") == 0
        assert sample(found, "durable_runs_completed", "durable_runs_completed_total", workflow="short_nap") == 1
        assert sample(found, "durable_step_attempts", "durable_step_attempts_total",
                      workflow="short_nap", step="add") == 1  # the tick's own attempt; the first ran in `durable run`
        assert sample(found, "durable_step_duration_seconds", "durable_step_duration_seconds_count",
                      workflow="short_nap", step="add", outcome="completed") == 1
        assert found["durable_tick_duration_seconds"].type == "histogram"
        assert sample(found, "durable_runs_due", "durable_runs_due") == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        proc.stdout.close()  # type: ignore[union-attr]
    records = [json.loads(line) for line in stderr.read_text().splitlines()]
    assert records and all(set(record) == LOG_KEYS for record in records)
    completed = [r for r in records if r["event"] == "run_completed"]
    assert [(r["workflow"], r["level"]) for r in completed] == [("short_nap", "info")]


TICKED = """
from durable_cli import logger, sleep, step, workflow


@step(max_retries=0)
def boom():
    raise RuntimeError("no luck")


@workflow
def naps():
    sleep("1h")
    logger.info("woke up")
    return 1


@workflow
def breaks():
    sleep("1h")
    return boom()
"""


def test_tick_and_tick_loop_log_one_json_object_a_line(tmp_path: Path) -> None:
    write_module(tmp_path, "flows", TICKED)
    journals = tmp_path / "journals"
    for ref in ("flows:naps", "flows:breaks"):
        assert durable("run", ref, dir=journals, cwd=tmp_path)[0] == 0
    code, out, err = durable("tick", "--now", "2100-01-01T00:00:00Z", "--log-format", "json", dir=journals, cwd=tmp_path)
    assert code == 0 and out == ""
    records = [json.loads(line) for line in err.splitlines()]
    assert all(set(record) == LOG_KEYS for record in records)
    by_event = {(r["event"], r["workflow"]): r for r in records}
    assert by_event[("run_completed", "naps")]["level"] == "info"
    failed = by_event[("run_failed", "breaks")]
    assert failed["level"] == "warning" and "RuntimeError: no luck" in failed["message"] and failed["run_id"]
    woke = next(r for r in records if r["message"] == "woke up")  # durable_cli.logger, from workflow code
    assert woke["workflow"] == "naps" and woke["run_id"] == by_event[("run_completed", "naps")]["run_id"]
    assert records[-1]["event"] == "tick" and records[-1]["message"] == "tick: 2 resumed, 1 completed, 1 failed"

    assert durable("run", "flows:naps", dir=journals, cwd=tmp_path)[0] == 0
    loop = spawn([DURABLE, "--dir", str(journals), "tick", "--loop", "--interval", "0.1s",
                             "--now", "2100-01-01T00:00:00Z", "--log-format", "json"],
                            cwd=tmp_path, env=durable_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            bufsize=0)  # unbuffered: communicate() must get every line after the first
    first = json.loads(loop.stderr.readline())  # type: ignore[union-attr]
    loop.send_signal(signal.SIGTERM)
    out_bytes, rest = loop.communicate(timeout=10)
    assert loop.returncode == 0 and out_bytes == b""
    records = [first, *(json.loads(line) for line in rest.decode().splitlines())]
    assert all(set(record) == LOG_KEYS for record in records)
    assert [r["event"] for r in records if r["workflow"] == "naps"] == ["durable_cli.workflow", "run_completed"]
    assert [r["message"] for r in records if r["event"] in ("tick_pass", "tick")] == [
        "tick pass: 1 resumed, 1 completed", "tick: 1 resumed, 1 completed"]


def test_without_the_otel_extra(tmp_path: Path) -> None:
    """--metrics and `otel: true` say which extra to install (exit 2); OTEL_* alone only warns."""
    shadow = tmp_path / "shadow" / "opentelemetry"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('absent')\n")
    write_module(tmp_path, "flows", FLOWS)
    env = {"PYTHONPATH": f"{tmp_path / 'shadow'}:{tmp_path}"}
    code, _, err = durable("serve", "--metrics", dir=tmp_path / "j", cwd=tmp_path, env=env)
    assert code == 2 and "pip install 'durable-cli[otel]'" in err
    code, out, err = durable("run", "flows:short_nap", "1", dir=tmp_path / "j", cwd=tmp_path,
                             env={**env, "OTEL_TRACES_EXPORTER": "otlp"})
    assert code == 0 and "sleeping" in out and "OpenTelemetry is not installed" in err
    (tmp_path / "durable.yaml").write_text("otel: true\n")
    code, _, err = durable("run", "flows:short_nap", "1", dir=tmp_path / "j", cwd=tmp_path, env=env)
    assert code == 2 and "otel: true needs OpenTelemetry: pip install 'durable-cli[otel]'" in err
