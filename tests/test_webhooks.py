"""`create_webhook()` inside workflows: its URL (where it comes from, and that replays keep it)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone


from durable_cli import create_webhook, sleep, start, tick, workflow


@workflow
def url_before_and_after_a_sleep() -> list[str]:
    hook = create_webhook(token="wh-fixed-token")
    first = hook.url
    sleep("1h")
    return [first, hook.url]


@workflow
def random_webhook_token() -> str:
    return create_webhook().token


def test_the_url_is_journaled_so_a_replay_keeps_it(tmp_path, monkeypatch):
    monkeypatch.setenv("DURABLE_PUBLIC_URL", "https://hooks.example.com/")
    run = start(url_before_and_after_a_sleep, dir=str(tmp_path))
    monkeypatch.setenv("DURABLE_PUBLIC_URL", "https://elsewhere.example.com")
    tick(dir=str(tmp_path), now=datetime.now(timezone.utc) + timedelta(hours=2))
    from durable_cli import get_run

    done = get_run(run.run_id, dir=str(tmp_path))
    assert done.result == ["https://hooks.example.com/hooks/wh-fixed-token"] * 2


def test_the_public_url_comes_from_durable_yaml_when_the_environment_has_none(tmp_path, monkeypatch):
    monkeypatch.delenv("DURABLE_PUBLIC_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "durable.yaml").write_text("public_url: https://from-yaml.example.org\n")
    run = start(url_before_and_after_a_sleep, dir=str(tmp_path / "j"))
    events = [e for e in _events(tmp_path / "j", run.run_id) if e["type"] == "hook_created"]
    assert events[0]["webhook"]["url"] == "https://from-yaml.example.org/hooks/wh-fixed-token"


def test_the_default_public_url_is_local_port_8080(tmp_path, monkeypatch):
    monkeypatch.delenv("DURABLE_PUBLIC_URL", raising=False)
    monkeypatch.delenv("DURABLE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    run = start(url_before_and_after_a_sleep, dir=str(tmp_path / "j"))
    events = [e for e in _events(tmp_path / "j", run.run_id) if e["type"] == "hook_created"]
    assert events[0]["webhook"]["url"] == "http://127.0.0.1:8080/hooks/wh-fixed-token"


def test_a_webhook_token_has_at_least_128_random_bits(tmp_path):
    tokens = {start(random_webhook_token, dir=str(tmp_path)).result for _ in range(3)}
    assert len(tokens) == 3
    for token in tokens:
        assert len(token) >= 22 and all(c.isalnum() or c in "-_" for c in token)


def _events(store, run_id):
    from durable_cli._store.files import FileStore

    return FileStore(str(store)).read_events(run_id)


@workflow
def answers_with_a_framing_header() -> str:
    hook = create_webhook(token="wh-old-answer", respond_with={"status": 200, "headers": {"content-length": "5"}})
    sleep("1h")
    return hook.url


def test_a_webhook_journaled_before_its_options_were_checked_still_replays(tmp_path, monkeypatch):
    """create_webhook checked respond_with on every replay: a run started by a version that took
    a content-length header (now refused when a webhook is created) failed with ValueError at its
    next resume, its journal unchanged. The options are checked when the webhook is created only."""
    import durable_cli._webhooks as webhooks
    from durable_cli import get_run

    monkeypatch.setattr(webhooks, "check_response", lambda *args: None)  # as versions before the check
    run = start(answers_with_a_framing_header, dir=str(tmp_path))
    monkeypatch.undo()
    tick(dir=str(tmp_path), now=datetime.now(timezone.utc) + timedelta(hours=2))
    done = get_run(run.run_id, dir=str(tmp_path))
    assert (done.status, done.result) == ("completed", "http://127.0.0.1:8080/hooks/wh-old-answer")
