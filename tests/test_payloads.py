"""Hook payloads from outside are strict JSON: no NaN, no BOM, bounded depth and size, never empty."""

from __future__ import annotations

import pytest

from durable_cli.errors import InvalidPayload
from durable_cli._payloads import DEFAULT_LIMIT, check_value, parse_payload, read_payload


@pytest.mark.parametrize("data, value", [
    (b'{"ok": true}', {"ok": True}),
    (b"[1, 2.5, null]", [1, 2.5, None]),
    (b'"text"', "text"),
    (b"0", 0),
    (b"null", None),
    ('{"name": "J\u00fcrgen"}'.encode(), {"name": "J\u00fcrgen"}),
])
def test_valid_json_documents_are_accepted(data, value):
    assert parse_payload(data) == value


@pytest.mark.parametrize("data", [b"NaN", b"[Infinity]", b'{"a": -Infinity}'])
def test_nan_and_infinity_are_refused(data):
    with pytest.raises(InvalidPayload, match="not allowed"):
        parse_payload(data)


@pytest.mark.parametrize("data, reason", [(b"1e999", "out of range for a float"), (b"[-1e400]", "out of range"),
                                          (b"9" * 5000, "more than 4300 digits")])
def test_a_number_beyond_a_float_or_pythons_digits_limit_is_refused_as_invalid_json(data, reason):
    """1e999 read as infinity, which no journal holds (refused later, as "not serializable"); an
    integer of 5,000 digits raised Python's own ValueError, past every `except InvalidPayload`."""
    with pytest.raises(InvalidPayload, match=f"invalid JSON: .*{reason}"):
        parse_payload(data)


def test_a_byte_order_mark_is_refused():
    with pytest.raises(InvalidPayload, match="byte order mark"):
        parse_payload(b"\xef\xbb\xbf{}")


@pytest.mark.parametrize("data", [b"", b"   \n"])
def test_an_empty_payload_is_refused(data):
    with pytest.raises(InvalidPayload, match="empty"):
        parse_payload(data)


@pytest.mark.parametrize("data", [b"{", b"{'a': 1}", b"[1,]", b"\xff\xfe"])
def test_malformed_json_is_refused(data):
    with pytest.raises(InvalidPayload, match="invalid JSON"):
        parse_payload(data)


def test_100k_deep_nesting_is_refused_without_crashing():
    with pytest.raises(InvalidPayload, match="deeper"):
        parse_payload(b"[" * 100_000 + b"]" * 100_000)


def test_moderate_nesting_is_accepted_and_deep_nesting_refused():
    assert parse_payload(b"[" * 500 + b"]" * 500) is not None
    with pytest.raises(InvalidPayload, match="deeper"):
        parse_payload(b'{"a":' * 1000 + b"1" + b"}" * 1000)


def test_a_payload_over_1_mib_is_refused():
    data = b'"' + b"x" * DEFAULT_LIMIT + b'"'
    with pytest.raises(InvalidPayload, match="limit"):
        parse_payload(data)


def test_a_payload_of_exactly_1_mib_is_accepted():
    data = b'"' + b"x" * (DEFAULT_LIMIT - 2) + b'"'
    assert len(parse_payload(data)) == DEFAULT_LIMIT - 2


def test_python_values_that_are_not_json_are_refused():
    with pytest.raises(InvalidPayload, match="not JSON serializable"):
        check_value({"when": object()})
    with pytest.raises(InvalidPayload):
        check_value(float("inf"))


def test_a_missing_payload_file_is_an_invalid_payload(tmp_path):
    with pytest.raises(InvalidPayload, match="cannot read"):
        read_payload(str(tmp_path / "absent.json"))


def test_a_directory_is_not_a_payload_file(tmp_path):
    with pytest.raises(InvalidPayload, match="regular file"):
        read_payload(str(tmp_path))
