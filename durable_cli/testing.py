"""A test kit: runs in a temporary journal dir under a virtual clock, so a 7-day workflow tests in ms.

    def test_approval(durable_env):
        run = durable_env.start(request_approval, "invoice-7")
        durable_env.resume("approval-invoice-7", {"approved": True})
        assert durable_env.get_run(run.run_id).result == "invoice-7 approved by someone"

`durable_env` is a pytest fixture (installed as a plugin with durable-cli); `DurableTestEnv` works
without pytest too. Time moves only when the test says so: `advance("7 days")`, and step retry
back-offs pass instantly.
"""

from __future__ import annotations

import tempfile
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

from .timeparse import parse_duration

try:
    import pytest
except ImportError:  # pragma: no cover - the kit works without pytest
    pytest = None  # type: ignore[assignment]

__all__ = ["DurableTestEnv", "VirtualClock", "durable_env"]


class VirtualClock:
    """A clock that stands still until moved; in-process pauses move it instead of sleeping."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        """Move the clock on by `seconds` instead of waiting (a step's retry back-off)."""
        self.now += timedelta(seconds=seconds)


class DurableTestEnv:
    """Start, advance, resume and inspect runs of a private store at a virtual time."""

    def __init__(self, dir: str | None = None, start: datetime | None = None, store: str | None = None) -> None:
        """A private journal dir (a temp dir unless `dir` is given), or the store at URL `store`."""
        from .engine.driver import Options
        from .store import open_store

        self.dir = None if store else dir or tempfile.mkdtemp(prefix="durable-test-")
        self.store = open_store(self.dir, store)
        self.clock = VirtualClock(start or datetime(2030, 1, 1, tzinfo=timezone.utc))
        self.options = Options()

    @property
    def now(self) -> datetime:
        return self.clock.now

    def start(self, fn: Any, *args: Any, run_id: str | None = None, **kwargs: Any) -> Any:
        """Start a run of workflow `fn` and drive it until it completes, fails or suspends."""
        from .client import create_run

        return create_run(self.store, fn, args, kwargs, run_id, self.clock, self.options)

    def tick(self) -> Any:
        """One tick at the current virtual time."""
        from .ticker import tick_once

        return tick_once(self.store, self.clock, self.options)

    def advance(self, duration: object) -> Any:
        """Move the virtual clock forward (e.g. "7 days") and tick; returns the tick's summary."""
        self.clock.sleep(parse_duration(duration))
        return self.tick()

    def resume(self, token: str, payload: Any, key: str | None = None) -> Any:
        """Deliver a hook payload as `durable resume` does; returns the run after it went on."""
        from .client import deliver_payload
        from .payloads import check_value

        check_value(payload)
        delivery = deliver_payload(self.store, token, payload, key, False, self.clock, self.options)
        return delivery.run if delivery.run is not None else self.get_run(delivery.run_id)

    def get_run(self, run_id: str) -> Any:
        """The run as its journal says now."""
        from .engine.driver import get_run

        return get_run(self.store, run_id)

    def events(self, run_id: str) -> list[dict[str, Any]]:
        """The run's journal events."""
        return self.store.read_events(run_id)

    def steps(self, run_id: str) -> list[dict[str, Any]]:
        """Each step of the run in call order: name, attempts, result, error, status."""
        from .inspection import timeline

        return [entry for entry in timeline(self.events(run_id)) if entry["kind"] == "step"]


if pytest is not None:

    @pytest.fixture
    def durable_env(tmp_path: Any) -> Iterator[DurableTestEnv]:
        """A DurableTestEnv in a temporary journal dir, at 2030-01-01T00:00Z on a virtual clock."""
        yield DurableTestEnv(str(tmp_path / "journals"))
