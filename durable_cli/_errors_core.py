"""The exceptions an idle `durable tick` can meet (the store, the journal and tick raise them), and
those of posting a payload (`durable resume --enqueue`), apart from the other ~20 classes so that
these commands load these alone. `durable_cli.errors` re-exports each one, and each is named
`durable_cli.errors.X` (its `__module__`): journals, pickles and tracebacks name them as before."""

from __future__ import annotations


class DurableError(Exception):
    """Base class of every error durable-cli raises on purpose."""

    __module__ = "durable_cli.errors"


class JournalDamaged(DurableError):
    """A journal line other than a torn last line cannot be read; the file is left untouched."""

    __module__ = "durable_cli.errors"


class JournalTooNew(JournalDamaged):
    """A journal written by a newer durable-cli (a format version `v` above the one this version
    reads): refused, never replayed. A JournalDamaged, so every command sets it aside as it does a
    damaged journal: that run is reported, the others go on."""

    __module__ = "durable_cli.errors"


class RunNotFound(DurableError):
    """No run with that id exists in the store."""

    __module__ = "durable_cli.errors"


class RunBusy(DurableError):
    """Another process is executing the run right now."""

    __module__ = "durable_cli.errors"


class StoreError(DurableError):
    """The store cannot be used as configured (bad URL, missing driver, newer schema...)."""

    __module__ = "durable_cli.errors"


class JournalEmpty(JournalDamaged):
    """A run's journal holds no event: its creator died before `run_started` was durable, or the
    journal was cut to nothing. Reported for that run; `durable run --id` creates it again."""

    __module__ = "durable_cli.errors"


class UnknownToken(DurableError):
    """No live run holds that hook token."""

    __module__ = "durable_cli.errors"


class InvalidPayload(DurableError):
    """A payload is not acceptable JSON (or is too large)."""

    __module__ = "durable_cli.errors"


class PayloadTooLarge(InvalidPayload):
    """A payload is over the payload limit (as sent, or as it would be stored)."""

    __module__ = "durable_cli.errors"
