"""A journal written before losers of `first()` were cancelled still resumes, and now stops.

tests/golden/races/journals holds a run of Temporal's `sleep_for_days` sample (the module
tests/golden/races/race_flows.py), written by the version before issue 14 item 15: it is in round
2, and its round-1 `hook.next()` lost the race to the sleep but was never cancelled (nothing at its
position in the journal). Resumed by this version, the replay cancels that loser (journaling
`hook_next` with `cancelled: true` at its position), so the signal reaches round 2 and the loop
stops after two emails. Never regenerate these files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from helpers import durable_json, run_events

GOLDEN = Path(__file__).parent / "golden" / "races"


def test_an_old_journal_of_a_race_resumes_and_the_signal_stops_the_loop(tmp_path: Path) -> None:
    store = tmp_path / "journals"
    shutil.copytree(GOLDEN / "journals", store)
    for path in [store, *store.rglob("*")]:
        path.chmod(0o700 if path.is_dir() else 0o600)
    code_dir = tmp_path / "code"
    code_dir.mkdir()
    shutil.copy(GOLDEN / "race_flows.py", code_dir)
    emails = tmp_path / "emails.txt"
    env = {"PYTHONPATH": str(code_dir), "GOLDEN_EMAILS": str(emails)}
    before = [e["type"] for e in run_events(store, "golden-race-days")]

    code, doc, err = durable_json("resume", "golden-days", "-", dir=store, env=env, input=json.dumps({"stop": 1}))
    assert code == 0, err
    assert (doc["status"], doc["result"]) == ("completed", 2)
    code, doc, err = durable_json("tick", "--now", "2100-01-01T00:00:00Z", dir=store, env=env)
    assert code == 0, err
    assert not emails.exists()  # both emails were journaled: none is sent again, none after the signal

    events = run_events(store, "golden-race-days")
    assert [e["type"] for e in events[:len(before)]] == before  # the old journal is kept as it was
    nexts = [(e["pos"], e.get("cancelled"), e.get("n")) for e in events if e["type"] == "hook_next"]
    assert nexts == [(4, True, None), (7, None, 1)]
