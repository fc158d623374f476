"""A test kit: runs in memory under a virtual clock, so a 7-day workflow tests in ms, with no disk I/O.

    def test_approval(durable_env):
        run = durable_env.start(request_approval, "invoice-7")
        durable_env.resume("approval-invoice-7", {"approved": True})
        assert durable_env.get_run(run.run_id).result == "invoice-7 approved by someone"

`durable_env` is a pytest fixture (installed as a plugin with durable-cli); `DurableTestEnv` works
without pytest too. Time moves only when the test says so: `advance("7 days")`, and step retry
back-offs pass instantly. Runs live in a private memory store (`memory:`, the storage contract in
this process), so tests write no file; `DurableTestEnv(dir=...)` keeps them in a journal dir
instead, `DurableTestEnv(store=URL)` in any store.

The kit runs as production does: it reads durable.yaml as the CLI does (`defaults`,
`max_recoveries`, `payload_limit`, `schedules`, `queues`, `import_paths`; not `dir` or `store`, it
keeps its own), and `advance()` ticks at every moment it passes where something was due (a schedule
instant, a sleep's end, a retry, a debounce window closing, a deadline, a rate window freeing
room for queued runs), as a tick every minute would.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Iterator, ParamSpec, overload

from ._checks import check_replay as check_replay
from ._engine.checking import ReplayOutcome as ReplayOutcome
from ._timeparse import parse_duration, parse_instant

try:
    import pytest
except ImportError:  # pragma: no cover - the kit works without pytest
    pytest = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from ._engine.delivered import Delivery
    from ._config import Config
    from ._engine.definitions import WorkflowDef
    from ._engine.run import Run
    from ._tick import TickSummary

__all__ = ["DurableTestEnv", "VirtualClock", "durable_env", "check_replay", "ReplayOutcome"]

P = ParamSpec("P")


def _instant(value: datetime | str) -> datetime:
    """`value` in UTC, as the engine's clock gives time: a naive datetime, or ISO 8601 text without
    an offset, is taken as UTC (as `durable tick --now` takes it)."""
    if isinstance(value, str):
        return parse_instant(value)
    if not isinstance(value, datetime):
        raise TypeError(f"the kit's clock takes a datetime or ISO 8601 text, not {value!r}")
    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


class VirtualClock:
    """A clock that stands still until moved; in-process pauses move it instead of sleeping.

    It gives UTC, as production's clock does (run ids and journal times are UTC): a time it is set
    to is converted, a naive one taken as UTC."""

    def __init__(self, start: datetime | str) -> None:
        self._now = _instant(start)

    @property
    def now(self) -> datetime:
        return self._now

    @now.setter
    def now(self, value: datetime | str) -> None:
        self._now = _instant(value)

    def __call__(self) -> datetime:
        return self._now

    def sleep(self, seconds: float) -> None:
        """Move the clock on by `seconds` instead of waiting (a step's retry back-off)."""
        self._now += timedelta(seconds=seconds)


class DurableTestEnv:
    """Start, advance, resume and inspect runs of a private store at a virtual time."""

    def __init__(self, dir: str | None = None, start: datetime | str | None = None, store: str | None = None,
                 config: str | None = None) -> None:
        """A private memory store; the journal dir `dir` if given, or the store at URL `store`.

        `start` is when the virtual clock starts (a datetime or ISO 8601 text, UTC if it names
        no offset); 2030-01-01T00:00Z by default.

        `config` is the durable.yaml to read; by default the one the CLI would use here
        ($DURABLE_CONFIG, else ./durable.yaml, else none).
        """
        import os

        from ._config import load_config, options_from
        from ._location import LEASE_ENV
        from ._store import open_store

        self.dir = None if store else dir
        self.store = open_store(self.dir, store or (None if dir else "memory:"), lease=os.environ.get(LEASE_ENV))
        self.clock = VirtualClock(start or datetime(2030, 1, 1, tzinfo=timezone.utc))
        self.config: Config = load_config(config)
        self.options = options_from(self.config)
        if self.config.schedules:
            self.tick()  # the schedules are seen from the start: their instants fire from now on

    @property
    def now(self) -> datetime:
        return self.clock.now

    def close(self) -> None:
        """Close the kit's store (a PostgreSQL store's connections and lease heartbeat); the
        `durable_env` fixture does it, `with DurableTestEnv(...) as env:` too."""
        self.store.close()

    def __enter__(self) -> DurableTestEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # typed as `durable_cli.start` is: arguments checked by mypy unless `run_id=` is given
    @overload
    def start(self, fn: WorkflowDef[P, Any], /, *args: P.args, **kwargs: P.kwargs) -> Run: ...
    @overload
    def start(self, fn: WorkflowDef[P, Any], /, *args: Any, run_id: str, **kwargs: Any) -> Run: ...
    @overload
    def start(self, fn: WorkflowDef[P, Any], /, *args: Any, tags: dict[str, str], **kwargs: Any) -> Run: ...
    @overload
    def start(self, fn: WorkflowDef[P, Any], /, *args: Any, queue: str, key: str | None = None,
              priority: int | None = None, deadline: object = None, **kwargs: Any) -> Run: ...
    @overload
    def start(self, fn: WorkflowDef[P, Any], /, *args: Any, debounce: object, key: str | None = None,
              debounce_max: object = None, deadline: object = None, **kwargs: Any) -> Run: ...
    @overload
    def start(self, fn: WorkflowDef[P, Any], /, *args: Any, deadline: object, **kwargs: Any) -> Run: ...
    def start(self, fn: Any, /, *args: Any, run_id: str | None = None,  # type: ignore[misc]
              tags: dict[str, str] | None = None, queue: str | None = None, key: str | None = None,
              priority: int | None = None, debounce: object = None, debounce_max: object = None,
              deadline: object = None, **kwargs: Any) -> Run:
        """Start a run of workflow `fn` and drive it until it completes, fails or suspends; `tags=`
        and the flow options (`queue=`, `key=`, `priority=`, `debounce=`, `deadline=`) work as in
        `start`, with the queues of the kit's durable.yaml."""
        from ._engine.definitions import check_workflow
        from ._engine.lifecycle import create_run
        from ._engine.published import check_tags
        from ._queues import flow_request

        check_workflow(fn)
        extra = {"tags": check_tags(tags)} if tags else None
        flow = flow_request(self.options.queues, queue, key, priority, deadline, debounce, debounce_max)
        return create_run(self.store, fn, args, kwargs, run_id, self.clock, self.options, extra, flow=flow)

    def tick(self) -> TickSummary:
        """One tick at the current virtual time (schedules of durable.yaml included)."""
        from ._engine.steps import release_returned
        from ._tick import tick_once

        release_returned()  # a timed-out step's code that has returned holds its run no more
        return tick_once(self.store, self.clock, lambda: self.options, config=self.config)

    def advance(self, duration: object) -> TickSummary:
        """Move the virtual clock forward (e.g. "7 days"), ticking at each moment on the way where
        something falls due (a schedule instant, a wake time); returns the ticks' summary."""
        from ._tick import TickSummary

        try:
            end = self.clock.now + timedelta(seconds=parse_duration(duration))
        except OverflowError:
            raise ValueError(f"cannot advance the clock by {duration!r} from {self.clock.now}: "
                             "it would pass the year 9999") from None
        total = TickSummary()
        while True:
            moment = self._next_due(end)
            if moment is None:
                break
            self.clock.now = moment
            total.add(self.tick())
        self.clock.now = max(self.clock.now, end)  # in-process retry back-offs may have passed it
        total.add(self.tick())
        return total

    def _next_due(self, end: datetime) -> datetime | None:
        """The earliest moment after now and before `end` when a run or a schedule falls due."""
        from ._cron import next_instant

        now = self.clock.now
        moments = [due_at for due_at, _ in self.store.due(end) if now < due_at < end]
        moments += [next_instant(schedule, now) for schedule in self.config.schedules]
        for limits in self.config.queues.values():  # a rate window that frees while runs wait
            stats = self.store.queue_stats(limits, now) if limits.rate is not None else {}
            if stats.get("queued") and stats.get("rate_free_at") is not None:
                moments.append(stats["rate_free_at"])
        moments = [moment for moment in moments if moment < end]
        return min(moments, default=None)

    def resume(self, token: str, payload: Any, key: str | None = None) -> Run:
        """Deliver a hook payload as `durable resume` does; returns the run after it went on."""
        from ._engine.delivered import deliver_payload
        from ._payloads import check_value

        check_value(payload, self.options.payload_limit)
        return self._went_on(deliver_payload(self.store, token, payload, key, False, self.clock, self.options))

    def deliver_webhook(self, token: str, body: bytes | str | Any = b"", headers: dict[str, str] | None = None,
                        method: str = "POST") -> Run:
        """Deliver an HTTP request to a webhook as `durable serve` and a tick would; returns the run.

        `body` is bytes, text, or any other value sent as JSON. A webhook created with
        `secret_env` gets the body signed with that variable's secret, as a genuine sender signs.
        Raises UnknownToken (serve's 404) unless a live webhook holds `token`, InvalidPayload
        (serve's 413/400) for a body over the payload limit or JSON that does not parse.
        """
        import json
        import os

        from ._engine.delivered import deliver_payload
        from ._engine.posting import holder_of
        from .errors import DurableError, InvalidPayload, UnknownToken
        from ._payloads import parse_payload
        from ._webhooks import SIGNATURE_HEADER, new_delivery_id, request_payload

        sent = dict(headers or {})
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            sent.setdefault("content-type", "application/json")
        data = body.encode() if isinstance(body, str) else body
        if len(data) > self.options.payload_limit:
            raise InvalidPayload(f"the body is over the payload limit of {self.options.payload_limit} bytes")
        _, history = holder_of(self.store, token)
        fields = next((op.events[0].get("webhook") for op in history.ops.values()
                       if op.kind == "hook" and op.events[0].get("token") == token), None)
        if not isinstance(fields, dict):
            raise UnknownToken(f"no live webhook holds token {token!r} (a plain hook: use resume())")
        if fields.get("secret_env"):
            import hashlib
            import hmac

            secret = os.environ.get(fields["secret_env"], "").encode()
            if not secret:
                raise DurableError(f"${fields['secret_env']} is not set: durable serve would refuse "
                                   "every delivery to this webhook (401)")
            sent[SIGNATURE_HEADER] = "sha256=" + hmac.new(secret, data, hashlib.sha256).hexdigest()
        if "json" in {k.lower(): v for k, v in sent.items()}.get("content-type", ""):
            parse_payload(data, self.options.payload_limit)
        payload = request_payload(method, sent, data, delivery=new_delivery_id())
        return self._went_on(deliver_payload(self.store, token, payload, None, False, self.clock, self.options))

    def _went_on(self, delivery: Delivery) -> Run:
        return delivery.run if delivery.run is not None else self.get_run(delivery.run_id)

    def read_stream(self, run_id: str, name: str = "default", start: int = 0) -> list[Any]:
        """The data of a run's output stream from index `start` (as `durable tail --stream` shows)."""
        return [chunk["data"] for chunk in self.store.stream_read(run_id, name, start)]

    def cancel(self, run_id: str) -> Run:
        """Cancel a run as `durable cancel --wait` does: it never executes another step."""
        from ._engine.lifecycle import cancel_run

        return cancel_run(self.store, run_id, self.clock, self.options)

    def retry(self, run_id: str, allow_cancelled: bool = False) -> Run:
        """Resume a failed run on fixed code, as `durable retry` (`--allow-cancelled`) does."""
        from ._engine.lifecycle import retry_run

        return retry_run(self.store, run_id, self.clock, self.options, allow_cancelled)

    def get_event(self, run_id: str, key: str, default: Any = None) -> Any:
        """The latest value the run published under `key` with `set_event` (as `get_event` gives
        it), else `default`. It never waits: time moves only when the test says so."""
        from ._engine.published import check_key

        check_key(key)
        return self.get_run(run_id).events.get(key, default)

    def get_run(self, run_id: str) -> Run:
        """The run as its journal says now."""
        from ._engine.lifecycle import get_run

        return get_run(self.store, run_id)

    def events(self, run_id: str) -> list[dict[str, Any]]:
        """The run's journal events."""
        return self.store.read_events(run_id)

    def steps(self, run_id: str) -> list[dict[str, Any]]:
        """Each step of the run in call order: name, attempts, result, error, status."""
        from ._inspection import timeline

        return [entry for entry in timeline(self.events(run_id)) if entry["kind"] == "step"]


if pytest is not None:

    @pytest.fixture
    def durable_env() -> Iterator[DurableTestEnv]:
        """A DurableTestEnv in a private memory store, at 2030-01-01T00:00Z on a virtual clock."""
        with DurableTestEnv() as env:
            yield env
