"""A step with transient errors: retried with back-off until it succeeds (or fails for good).

    durable run examples.flaky:fetch_report '"eu"'
"""

from durable_cli import FatalError, RetryableError, get_step_metadata, step, workflow


@step(max_retries=5, retry_delay="100ms")
def call_flaky_api(region: str) -> dict[str, object]:
    """Fails on its first two attempts, like a service that is briefly unavailable."""
    attempt = get_step_metadata().attempt
    if region not in ("eu", "us"):
        raise FatalError(f"unknown region {region!r}")
    if attempt < 3:
        raise RetryableError(f"service unavailable (attempt {attempt})", retry_after="50ms")
    return {"region": region, "attempts": attempt}


@workflow
def fetch_report(region: str) -> dict[str, object]:
    return call_flaky_api(region)
