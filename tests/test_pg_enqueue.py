"""`durable resume --enqueue` on PostgreSQL posts through libpq directly (`_store/libpq.py`,
`_store/pg_inbox.py`), without importing psycopg: the same statements with the same parameters as
the psycopg store, the same checks at the door, the same errors, and psycopg again whenever the
shortcut cannot be taken (no libpq, a schema to migrate).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import psycopg
import pytest

from durable_cli._store import libpq, pg_inbox
from durable_cli._store.pg_url import unquote
from helpers import durable, durable_env, durable_in_process, write_module
from test_postgres_workers import HOOKED

TOKEN = "tok-enqueue"


@pytest.fixture
def waiting(tmp_path: Path, pg_url: str) -> Iterator[tuple[Path, str, str]]:
    """(project dir, store URL, run id) of a run waiting on hook TOKEN."""
    write_module(tmp_path, "hooked", HOOKED)
    code, out, err = durable("--store", pg_url, "run", "hooked:wait_for", TOKEN, "--json", cwd=tmp_path)
    assert code == 0, err
    yield tmp_path, pg_url, json.loads(out)["run_id"]


def inbox(url: str) -> list[tuple[str, dict[str, Any]]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [(run_id, json.loads(message)) for run_id, message in
                conn.execute("SELECT run_id, message FROM durable_inbox ORDER BY id").fetchall()]


def fresh_python(project: Path, args: list[str], payload: bytes, env: dict[str, str] | None = None,
                 also: tuple[str, ...] = ()) -> tuple[int, str, str, list[str]]:
    """`durable ARGS` in a new Python (not a fork of a process that has psycopg loaded): exit
    code, stdout, stderr, and the psycopg modules it imported (and those of `also` it imported)."""
    script = ("import sys\nfrom durable_cli.cli import main\ncode = 0\n"
              f"try:\n    main({args!r})\nexcept SystemExit as exc:\n    code = exc.code\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0].startswith('psycopg')"
              f" or m in {also!r}), file=sys.stderr)\n"
              "sys.exit(code)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=project, input=payload, capture_output=True,
                          env=durable_env(env), timeout=60)
    *err, loaded = done.stderr.decode().splitlines() or ["[]"]  # nothing when it was killed
    return done.returncode, done.stdout.decode(), "\n".join(err), eval(loaded)


def test_resume_enqueue_posts_without_importing_psycopg_and_a_tick_delivers_it(waiting) -> None:
    project, url, run_id = waiting
    code, out, err, loaded = fresh_python(project, ["--store", url, "resume", TOKEN, "-", "--enqueue", "--json"],
                                          b'{"ok": "\xc3\xa9"}')
    assert (code, loaded) == (0, []), err
    assert json.loads(out) == {"token": TOKEN, "run_id": run_id, "delivery": "queued"}
    [(posted_to, message)] = inbox(url)
    assert (posted_to, message["kind"], message["token"], message["payload"]) == (run_id, "hook", TOKEN, {"ok": "é"})
    code, _, err = durable("--store", url, "tick", cwd=project)
    assert code == 0, err
    code, out, err = durable_in_process("--store", url, "inspect", run_id, "--json", cwd=project)
    assert (json.loads(out)["status"], json.loads(out)["result"]) == ("completed", {"ok": "é"}), out


CUT_FROM_A_POST = (
    "durable_cli.errors",  # ~30 classes: what a post can raise is in _errors_core
    "dataclasses",  # `Delivery` (what resume_hook returns) is one: the post answers with a plain `Posted`
    "durable_cli.cli._runs",  # the other commands that steer runs: resume is a module of its own
)


def test_a_post_does_not_load_what_was_cut_from_its_way(waiting) -> None:
    """Each module of CUT_FROM_A_POST was once loaded by `resume --enqueue` and cut from its way
    (bench/README.md, "sixth session"); a post that goes through keeps them unloaded."""
    project, url, run_id = waiting
    code, out, err, loaded = fresh_python(project, ["--store", url, "resume", TOKEN, "-", "--enqueue"], b"1",
                                          also=CUT_FROM_A_POST)
    assert (code, out, loaded) == (0, f"queued for run {run_id}\n", []), err


def test_libpq_sends_the_statements_and_parameters_psycopg_sends(waiting, monkeypatch) -> None:
    """Every statement of a post, both ways: the same SQL after `%s` is numbered, the same
    parameter bytes, types and formats (psycopg's own conversion is the reference)."""
    from psycopg._queries import PostgresQuery
    from psycopg.adapt import Transformer

    from durable_cli._engine.posting import post_payload
    from durable_cli._store.postgres import PostgresStore
    from durable_cli._timeparse import utcnow

    project, url, run_id = waiting
    through_libpq: list[tuple[str, tuple[Any, ...]]] = []
    rows = libpq.Connection.rows
    monkeypatch.setattr(libpq.Connection, "rows",
                        lambda self, sql, params=(): through_libpq.append((sql, tuple(params))) or rows(self, sql, params))
    through_psycopg: list[tuple[str, tuple[Any, ...]]] = []
    execute = psycopg.Cursor.execute
    monkeypatch.setattr(psycopg.Cursor, "execute",
                        lambda self, sql, params=None, **kw: through_psycopg.append((sql, tuple(params or ())))
                        or execute(self, sql, params, **kw))
    for n, opened in enumerate((pg_inbox.open_posting(url), PostgresStore(url))):
        assert opened is not None
        try:
            delivery = post_payload(opened, TOKEN, {"n": n}, f"k{n}", utcnow, 1 << 20)
        finally:
            opened.close()
        assert (delivery.status, delivery.run_id) == ("queued", run_id)
    assert [sql for sql, _ in through_libpq if sql not in ("BEGIN", "COMMIT")] == [sql for sql, _ in through_psycopg]
    with psycopg.connect(url) as conn:
        for sql, params in through_libpq:
            query = PostgresQuery(Transformer(conn))
            query.convert(sql, params)
            text, dumped = libpq.convert(sql, params)
            assert text == query.query
            assert [(oid, data, binary) for oid, data, binary in dumped] == [
                (oid, None if data is None else bytes(data), int(binary))
                for oid, data, binary in zip(query.types, query.params or (), query.formats or ())]
    assert [message["payload"] for _, message in inbox(url)] == [{"n": 0}, {"n": 1}]


def test_a_key_delivered_before_is_a_duplicate_and_an_unknown_token_is_refused(waiting) -> None:
    project, url, run_id = waiting
    resume = ["--store", url, "resume", TOKEN, "-", "--enqueue", "--key", "k", "--json"]
    code, out, err, loaded = fresh_python(project, resume, b"1")
    assert (code, json.loads(out)["delivery"], loaded) == (0, "queued", []), err
    code, _, err = durable("--store", url, "tick", cwd=project)  # delivered: the run completes with it
    assert code == 0, err
    code, out, err, loaded = fresh_python(project, resume, b"1")
    assert (code, json.loads(out)["delivery"], loaded) == (0, "duplicate", []), err
    assert err == f"key 'k' was already delivered to run {run_id}; not delivered again"
    code, out, err, loaded = fresh_python(project, resume[:-3], b"1")
    assert (code, loaded) == (2, []), err
    assert err == f"Error: no live run holds token {TOKEN!r}: run {run_id} has completed"
    code, out, err, loaded = fresh_python(project, ["--store", url, "resume", "tok-nobody", "-", "--enqueue"], b"1")
    assert (code, loaded) == (2, []), err
    assert err == "Error: no live run holds token 'tok-nobody'"
    assert inbox(url) == []


@pytest.mark.parametrize("payload", [
    b'"\\ud800"',  # a lone surrogate: no UTF-8 journal can hold it
    b'"\xff"',  # not UTF-8
    b'{"a": \x00}',  # a NUL byte
    b"[" * 100_000 + b"]" * 100_000,  # nested too deep
    b'"' + b"x" * (1 << 20) + b'"',  # over the payload limit
], ids=["surrogate", "not-utf8", "nul", "deep", "huge"])
def test_a_bad_payload_is_refused_in_one_sentence_before_anything_is_sent(waiting, payload: bytes) -> None:
    project, url, _ = waiting
    code, out, err, loaded = fresh_python(project, ["--store", url, "resume", TOKEN, "-", "--enqueue"], payload)
    assert (code, out, loaded) == (2, "", []), err
    assert err.startswith("Error: ") and len(err.splitlines()) == 1, err
    assert inbox(url) == []


def test_a_server_that_is_not_there_is_one_sentence_and_exit_2(tmp_path: Path) -> None:
    url = f"postgresql:///nowhere?host={tmp_path}&user=postgres&password=pw-not-shown"
    code, out, err, loaded = fresh_python(tmp_path, ["--store", url, "resume", TOKEN, "-", "--enqueue"], b"1")
    assert (code, out, loaded) == (2, "", []), err
    assert err.startswith(f"Error: cannot connect to postgresql:///nowhere?host={tmp_path}&user=postgres&password=***: "
                          "connection failed: "), err
    assert "No such file or directory" in err and "pw-not-shown" not in err and "Traceback" not in err


@pytest.fixture
def password_role(pg_server, pg_url: str) -> Iterator[tuple[str, str]]:
    """(user, URL with the wrong password) of a role that must give its password (scram)."""
    if pg_server.external:
        pytest.skip("changes pg_hba.conf, which only a server of our own allows")
    hba = Path(pg_server.directory) / "data" / "pg_hba.conf"
    user = f"enq_pw_{os.getpid()}"
    before = hba.read_text()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {user} LOGIN PASSWORD 'right-pw'")
        hba.write_text(f"local all {user} scram-sha-256\n{before}")
        conn.execute("SELECT pg_reload_conf()")
    database, _, query = pg_url.removeprefix("postgresql:///").partition("?")
    url = f"postgresql://{user}:wrong-pw@/{database}?{query.split('&')[0]}"
    deadline = time.monotonic() + 10
    while True:  # the reload is asynchronous
        try:
            psycopg.connect(url).close()
        except psycopg.OperationalError:
            break
        assert time.monotonic() < deadline, "pg_hba.conf was not reloaded"
        time.sleep(0.05)
    try:
        yield user, url
    finally:
        hba.write_text(before)
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
            conn.execute(f"DROP ROLE {user}")


def test_a_wrong_password_is_said_as_the_psycopg_store_says_it(tmp_path: Path, password_role) -> None:
    user, url = password_role
    code, out, err, loaded = fresh_python(tmp_path, ["--store", url, "resume", TOKEN, "-", "--enqueue"], b"1")
    assert (code, out, loaded) == (2, "", []), err
    code_psycopg, _, err_psycopg = durable("--store", url, "resume", TOKEN, "-", input="1", cwd=tmp_path)
    assert code_psycopg == 2
    assert err == err_psycopg.strip(), (err, err_psycopg)
    assert f'password authentication failed for user "{user}"' in err and "wrong-pw" not in err


def test_a_database_without_the_schema_is_migrated_by_the_psycopg_store_as_before(tmp_path: Path,
                                                                                  pg_fresh_url: str) -> None:
    code, out, err, loaded = fresh_python(tmp_path, ["--store", pg_fresh_url, "resume", TOKEN, "-", "--enqueue"],
                                          b"1")
    assert (code, err) == (2, f"Error: no live run holds token {TOKEN!r}")
    assert "psycopg" in loaded  # the shortcut stood aside: the full store migrated the schema
    with psycopg.connect(pg_fresh_url) as conn:
        assert conn.execute("SELECT count(*) FROM durable_schema_version").fetchone() != (0,)


def test_without_a_libpq_to_load_psycopg_posts(waiting, monkeypatch) -> None:
    project, url, run_id = waiting
    monkeypatch.setattr(libpq, "_loaded", [None])
    assert pg_inbox.open_posting(url) is None
    code, out, err = durable_in_process("--store", url, "resume", TOKEN, "-", "--enqueue", "--json", input="7",
                                        cwd=project)
    assert (code, json.loads(out)["delivery"]) == (0, "queued"), err
    assert [message["payload"] for _, message in inbox(url)] == [7]


def test_a_crash_at_the_inbox_write_posts_nothing_and_a_retry_posts_once(waiting) -> None:
    """SIGKILL inside the posting transaction (its one store operation): the server rolls it back."""
    project, url, run_id = waiting
    code, _, _, _ = fresh_python(project, ["--store", url, "resume", TOKEN, "-", "--enqueue"], b"1",
                                 env={"DURABLE_CRASH_AT": "1"})
    assert code == -9
    deadline = time.monotonic() + 10
    with psycopg.connect(url, autocommit=True) as conn:  # until the server has seen the client go
        while conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone() != (0,):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert inbox(url) == []
    code, _, err, loaded = fresh_python(project, ["--store", url, "resume", TOKEN, "-", "--enqueue"], b"2")
    assert (code, loaded) == (0, []), err
    assert [message["payload"] for _, message in inbox(url)] == [2]


@pytest.mark.parametrize("text", ["", "plain", "a%20b", "%e2%82%ac", "%E2%82%AC%", "%zz%4", "100%", "%ff%fe", "é%41"])
def test_the_url_is_unquoted_as_urllib_unquotes_it(text: str) -> None:
    from urllib.parse import unquote as reference

    assert unquote(text) == reference(text)


def test_the_url_is_read_without_loading_dataclasses() -> None:
    """`resume --enqueue` reads its URL on the way to the post: no dataclass (each costs an exec)."""
    code = ("import sys\nfrom durable_cli._store.pg_url import parse_url\n"
            "url = parse_url('postgresql://me:s%40cret@db/app?lease=5')\n"
            "print(url.conninfo, url.location, url.lease, url.secrets, 'dataclasses' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], env=durable_env(), capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["postgresql://me:s%40cret@db/app", "postgresql://me:***@db/app?lease=5", "5.0",
                                   "('s%40cret',", "'s@cret')", "False"], done.stderr


def test_parameters_are_converted_as_psycopg_converts_them() -> None:
    assert libpq.convert("SELECT %s, 100 %% 7, %s, %s", ("a", 1 << 40, None)) == (
        b"SELECT $1, 100 % 7, $2, $3", [(0, b"a", 0), (20, (1 << 40).to_bytes(8, "big"), 1), (0, None, 0)])
    assert [oid for oid, _, _ in libpq.convert("%s %s %s", (-(1 << 15), 1 << 15, -(1 << 31) - 1))[1]] == [21, 23, 20]
    with pytest.raises(ValueError):
        libpq.convert("SELECT %(name)s", ())
    with pytest.raises(ValueError):
        libpq.convert("SELECT %s", ("a\0b",))


def test_an_error_inside_a_transaction_is_raised_with_its_sqlstate_and_rolls_it_back(pg_url: str) -> None:
    from durable_cli._store.pg_url import parse_url

    conn = libpq.Connection(parse_url(pg_url).conninfo)
    try:
        with pytest.raises(libpq.PqError) as raised:
            with conn.transaction() as tx:
                tx.execute("INSERT INTO durable_problems (run_id, reason) VALUES (%s, %s)", ("r1", "x"))
                tx.execute("SELECT 1 / %s", (0,))
        assert raised.value.sqlstate == "22012" and str(raised.value) == "division by zero"
        assert conn.rows("SELECT count(*) FROM durable_problems") == [("0",)]  # usable, nothing kept
        with conn.transaction() as tx:
            tx.execute("INSERT INTO durable_problems (run_id, reason) VALUES (%s, %s)", ("r3", "é"))
        assert conn.rows("SELECT run_id, reason, NULL FROM durable_problems") == [("r3", "é", None)]
    finally:
        conn.close()


def test_the_libpq_loaded_is_the_one_beside_the_psycopg_binary_that_import_would_find(tmp_path: Path,
                                                                                       monkeypatch) -> None:
    """A `psycopg_binary.libs` folder without the package beside it (say, planted in the current
    directory) is not looked at."""
    planted = tmp_path / "psycopg_binary.libs"
    planted.mkdir()
    (planted / "libpq-planted.so.5").write_bytes(b"not a library")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = list(libpq._candidates())
    assert str(planted / "libpq-planted.so.5") not in found
    assert found[-1] == "libpq.so.5" and len(found) >= 1
