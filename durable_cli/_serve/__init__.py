"""`durable serve`: webhooks for hooks, a JSON API and a live dashboard over a journal dir or store.

Starlette and uvicorn (the `serve` extra) are imported only here, never by the rest of the CLI.
The server never executes workflow code: deliveries go to the inbox, as with
`durable resume --enqueue`, and a tick (or `--tick`, a tick loop in this process) does the work.
"""

from __future__ import annotations

from .app import create_app
from .runner import serve

__all__ = ["create_app", "serve"]
