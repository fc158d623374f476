"""An AI content workflow with two steps: draft an article, then summarise it.

    durable run examples.ai_content:generate "durable workflows"

The "model" here is a deterministic stand-in, so the example runs anywhere without keys.
"""

from durable_cli import step, workflow


@step(max_retries=3, retry_delay="1s")
def draft_article(topic: str) -> str:
    """Ask the model for a draft (a real one would call an API: retried if it fails)."""
    return f"{topic.capitalize()} let programs sleep for days and survive crashes. " \
           f"Every step of a {topic} run is journaled, so nothing is done twice."


@step
def summarise(text: str) -> str:
    """Ask the model for a one-line summary of the draft."""
    return text.split(". ")[0] + "."


@workflow
def generate(topic: str) -> dict[str, str]:
    """Draft an article about `topic`, then summarise it; each step runs once."""
    article = draft_article(topic)
    return {"topic": topic, "article": article, "summary": summarise(article)}
