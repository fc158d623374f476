"""How tests/golden/kinds/journals was written, once, by the version that added it (issue 18).
Kept as the record of each journal's making; it refuses to run over existing journals: golden
journals are never regenerated (a new kind gets a directory of its own).

    .venv/bin/python tests/golden/kinds/write_kinds.py
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
STORE = HERE / "journals"
DURABLE = str(Path(sys.executable).parent / "durable")
SWAP = ('    amount = charge(x)\n    sleep("1h")\n', '    sleep("1h")\n    amount = charge(x)\n')


def main() -> None:
    if STORE.exists():
        sys.exit(f"{STORE} exists: golden journals are never regenerated")
    work = Path(tempfile.mkdtemp(prefix="golden-kinds-"))
    code = work / "code"
    code.mkdir()
    source = (HERE / "kinds_flows.py").read_text()
    env = {**os.environ, "PYTHONPATH": str(code)}
    env.pop("DURABLE_DIR", None)
    env.pop("DURABLE_STORE", None)

    def durable(*args: str, input: str | None = None, ok: tuple[int, ...] = (0,), **extra: str) -> str:
        done = subprocess.run([DURABLE, "--dir", str(STORE), *args], cwd=work, env={**env, **extra},
                              input=input, capture_output=True, text=True)
        if done.returncode not in ok:
            sys.exit(f"durable {' '.join(args)} exited {done.returncode}: {done.stderr}")
        return done.stdout

    later = (datetime.now(timezone.utc) + timedelta(hours=2)).isoformat()
    # a deadline that passed, and a run blocked by a deploy that swapped its step and its sleep
    (code / "kinds_flows.py").write_text(source)
    durable("run", "kinds_flows:deadline", "--id", "golden-deadline")
    durable("run", "kinds_flows:blocked", "7", "--id", "golden-blocked")
    (code / "kinds_flows.py").write_text(source.replace(*SWAP))
    durable("tick", "--now", later)
    (code / "kinds_flows.py").write_text(source)
    # a schedule's run (durable.yaml only for this tick)
    (work / "durable.yaml").write_text(json.dumps({"schedules": [
        {"name": "nightly", "cron": "0 3 * * *", "workflow": "kinds_flows:scheduled"}]}))
    durable("tick", "--now", (datetime.now(timezone.utc) - timedelta(days=2)).isoformat())  # first seen
    durable("tick")  # fires the latest instant since
    (work / "durable.yaml").unlink()
    # the rest, at the real time
    durable("run", "kinds_flows:gathered", "--id", "golden-gather")
    durable("run", "kinds_flows:raced", "--id", "golden-race")
    durable("resume", "golden-race", "-", input='{"v": 1}')
    durable("run", "kinds_flows:parent", "5", "--id", "golden-parent")
    durable("run", "kinds_flows:retried", "4", "--id", "golden-retries", GOLDEN_FAIL="1")
    durable("run", "kinds_flows:recovered", "6", "--id", "golden-recovered", ok=(-9, 137), GOLDEN_CRASH="1")
    durable("tick")
    durable("run", "kinds_flows:taxed", "100", "--id", "golden-patched")
    durable("run", "kinds_flows:values", "--id", "golden-values")
    durable("run", "kinds_flows:hooked", "--id", "golden-webhook")
    durable("run", "kinds_flows:streamed", "3", "--id", "golden-stream")
    for line in durable("ls").splitlines():
        print(line)
    for path in STORE.rglob("locks/*"):
        path.unlink()  # transient: a lock file is made again by whoever takes the run
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
