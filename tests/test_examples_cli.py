"""The examples run end to end through the real `durable`, as the README shows them."""

from __future__ import annotations

from pathlib import Path

from helpers import durable_json_in_process

ROOT = Path(__file__).resolve().parent.parent


def test_the_ai_content_example_completes_in_one_run(tmp_path):
    code, doc, err = durable_json_in_process("run", "examples.ai_content:generate", "durable workflows",
                                             dir=tmp_path / "j", cwd=ROOT)
    assert code == 0, err
    assert doc["status"] == "completed"
    assert doc["result"]["summary"].startswith("Durable workflows")


def test_the_approval_example_waits_until_durable_resume_delivers_a_decision(tmp_path):
    code, doc, err = durable_json_in_process("run", "examples.approval:request_approval", '"invoice-7"',
                                             dir=tmp_path / "j", cwd=ROOT)
    assert (code, doc["status"]) == (0, "waiting"), err
    code, resumed, err = durable_json_in_process("resume", "approval-invoice-7", "-", dir=tmp_path / "j", cwd=ROOT,
                                                 input='{"approved": true, "by": "ana"}')
    assert code == 0, err
    assert (resumed["status"], resumed["result"]) == ("completed", "invoice-7 approved by ana")
