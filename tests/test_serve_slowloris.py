"""`durable serve` under slow clients (slowloris): a few hundred connections dribbling headers or a
body, against a server whose open-files limit is lowered to 256. Slow headers and bodies are cut
off (408), connections beyond the cap are refused at once (503), the process never runs out of
file descriptors, and the API and the `--tick` loop keep working."""

from __future__ import annotations

import resource
import select
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from helpers import DURABLE, durable, durable_env, spawn

pytest.importorskip("uvicorn")

FLOWS = '''
from durable_cli import sleep, workflow


@workflow
def nap() -> str:
    sleep("2s")
    return "woke"
'''
SLOW_CLIENTS = 300
FILE_LIMIT = 256


def lowered_file_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FILE_LIMIT, FILE_LIMIT))


def slow_client(port: int, with_body: bool) -> socket.socket:
    """A connection that has sent only the start of its request (all its headers when `with_body`)."""
    sock = socket.create_connection(("127.0.0.1", port))
    head = b"POST /api/resume/some-token HTTP/1.1\r\nHost: 127.0.0.1\r\n"  # reads the body, then looks
    sock.sendall(head + b"Content-Length: 100000\r\n\r\n{" if with_body else head + b"X-Slow: ")
    sock.setblocking(False)
    return sock


def test_slow_clients_are_cut_off_and_neither_the_api_nor_the_tick_loop_starves(tmp_path: Path) -> None:
    (tmp_path / "flows.py").write_text(FLOWS)
    journals = tmp_path / "journals"
    assert durable("run", "--id", "napper", "flows:nap", dir=journals, cwd=tmp_path)[0] == 0
    log = tmp_path / "serve.log"
    with open(log, "wb") as err:
        proc = spawn([DURABLE, "--dir", str(journals), "serve", "--port", "0", "--tick", "--tick-interval", "0.2s",
             "--header-timeout", "1s"],
            cwd=tmp_path, env=durable_env(), stdout=subprocess.PIPE, stderr=err, preexec_fn=lowered_file_limit)
    try:
        assert proc.stdout is not None and select.select([proc.stdout], [], [], 15)[0], log.read_text()
        url = proc.stdout.readline().decode().split("listening on ")[1].strip().rstrip("/")
        port = int(url.rsplit(":", 1)[1])

        clients = {slow_client(port, with_body=k % 2 == 1): k % 2 == 1 for k in range(SLOW_CLIENTS)}
        answers: dict[str, int] = {}
        deadline = time.monotonic() + 30
        while clients and time.monotonic() < deadline:
            for sock in list(clients):
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    try:
                        sock.send(b"x")  # one more byte of a header value or of the body
                    except OSError:
                        pass
                    continue
                except OSError:
                    data = b""
                if data:
                    status = data.split(b"\r\n", 1)[0].decode()
                    kind = "body" if clients[sock] else "headers"
                    answers[f"{kind} {status}"] = answers.get(f"{kind} {status}", 0) + 1
                sock.close()
                del clients[sock]
            time.sleep(0.2)
        assert not clients, f"{len(clients)} slow connections still open after 30 s; answers: {answers}"
        assert answers.get("headers HTTP/1.1 408 Request Timeout", 0) > 0, answers
        assert answers.get("body HTTP/1.1 408 Request Timeout", 0) > 0, answers
        assert sum(answers.values()) == SLOW_CLIENTS and all(
            key.endswith(("408 Request Timeout", "503 Service Unavailable")) for key in answers), answers

        assert httpx.get(f"{url}/api/runs", timeout=10).status_code == 200
        for _ in range(100):  # the tick loop kept going: the run's 2 s sleep ended and it completed
            if httpx.get(f"{url}/api/runs/napper", timeout=10).json()["status"] == "completed":
                break
            time.sleep(0.2)
        assert httpx.get(f"{url}/api/runs/napper", timeout=10).json()["status"] == "completed"
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        proc.stdout.close()  # type: ignore[union-attr]
    stderr = log.read_text()
    assert "Too many open files" not in stderr and "Traceback" not in stderr, stderr[-3000:]


def test_the_connection_cap_leaves_room_under_the_open_files_limit() -> None:
    from durable_cli._serve.slowclients import FD_RESERVE, limits_for

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (FILE_LIMIT, hard))
    try:
        limits = limits_for(1.0, 1000, 1024)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert limits.max_connections + 4 * limits.backlog + FD_RESERVE <= FILE_LIMIT
    assert limits.max_connections >= 64
