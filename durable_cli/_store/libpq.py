"""libpq through ctypes, for the one command whose start is its cost: `durable resume --enqueue`
posts a payload in a handful of statements, and importing psycopg takes longer than all of them.

Only what those statements need: connect, run a statement with parameters, read its rows as text,
a transaction. Parameters go as psycopg sends them (`convert`): `%s` becomes `$1`..., a str is text
of unknown type, an int is binary int2/int4/int8 by its size, None is NULL. Both the connection and
every statement wait in `select`, so Ctrl-C interrupts them (the connection is closed, and with it
any open transaction). `load()` finds the libpq that psycopg-binary bundles (beside the package,
which is not imported), else the system's; None when neither loads, and the caller uses psycopg.
"""

from __future__ import annotations

import ctypes
import os
import sys
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

_OK, _BAD = 0, 1  # CONNECTION_OK, CONNECTION_BAD
_POLLING_FAILED, _POLLING_READING, _POLLING_WRITING, _POLLING_OK = 0, 1, 2, 3
_COMMAND_OK, _TUPLES_OK = 1, 2
_DIAG_SEVERITY, _DIAG_SQLSTATE = ord("S"), ord("C")
_INT_TYPES = ((2, 21), (4, 23), (8, 20))  # (bytes, oid): int2, int4, int8, the smallest that holds it

_P = ctypes.c_void_p
_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "PQconnectStart": (_P, [ctypes.c_char_p]),
    "PQconnectPoll": (ctypes.c_int, [_P]),
    "PQstatus": (ctypes.c_int, [_P]),
    "PQsocket": (ctypes.c_int, [_P]),
    "PQerrorMessage": (ctypes.c_char_p, [_P]),
    "PQparameterStatus": (ctypes.c_char_p, [_P, ctypes.c_char_p]),
    "PQfinish": (None, [_P]),
    "PQsendQueryParams": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.c_int, _P, _P, _P, _P, ctypes.c_int]),
    "PQconsumeInput": (ctypes.c_int, [_P]),
    "PQisBusy": (ctypes.c_int, [_P]),
    "PQgetResult": (_P, [_P]),
    "PQresultStatus": (ctypes.c_int, [_P]),
    "PQresultErrorMessage": (ctypes.c_char_p, [_P]),
    "PQresultErrorField": (ctypes.c_char_p, [_P, ctypes.c_int]),
    "PQntuples": (ctypes.c_int, [_P]),
    "PQnfields": (ctypes.c_int, [_P]),
    "PQgetisnull": (ctypes.c_int, [_P, ctypes.c_int, ctypes.c_int]),
    "PQgetvalue": (_P, [_P, ctypes.c_int, ctypes.c_int]),
    "PQgetlength": (ctypes.c_int, [_P, ctypes.c_int, ctypes.c_int]),
    "PQclear": (None, [_P]),
}
_loaded: list[Any] = []  # [the library, or None when none loads], once tried


class PqError(Exception):
    """What libpq or the server said went wrong (the severity prefix left out), and the SQLSTATE
    of a statement's error (None for a connection's)."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def _candidates() -> Iterator[str]:
    """psycopg-binary's own libpq (auditwheel puts it in `psycopg_binary.libs` beside the
    package), from the first `sys.path` entry that holds the package, as importing it would find
    it; then the system's."""
    for entry in sys.path:
        if os.path.isdir(os.path.join(entry or ".", "psycopg_binary")):
            folder = os.path.join(entry or ".", "psycopg_binary.libs")
            try:
                names = sorted(os.listdir(folder))
            except OSError:
                names = []
            yield from (os.path.join(folder, name) for name in names if name.startswith("libpq"))
            break
    yield "libpq.5.dylib" if sys.platform == "darwin" else "libpq.so.5"


def load() -> Any:
    """The libpq library with the functions this module calls typed, or None if none loads."""
    if not _loaded:
        _loaded.append(None)
        for path in _candidates():
            try:
                lib = ctypes.CDLL(path)
                for name, (restype, argtypes) in _SIGNATURES.items():
                    function = getattr(lib, name)
                    function.restype, function.argtypes = restype, argtypes
            except (OSError, AttributeError):
                continue
            _loaded[0] = lib
            break
    return _loaded[0]


def convert(sql: str, params: Sequence[Any]) -> tuple[bytes, list[tuple[int, bytes | None, int]]]:
    """`sql` with psycopg's `%s` placeholders numbered (`%%` is a `%`), and each parameter as
    (type oid, bytes or None, format: 0 text, 1 binary), as psycopg sends them."""
    pieces, count, index = [], 0, 0
    while True:
        found = sql.find("%", index)
        if found < 0:
            pieces.append(sql[index:])
            break
        marker = sql[found + 1:found + 2]
        if marker not in ("s", "%"):
            raise ValueError(f"only %s and %% placeholders are supported: {sql[found:found + 10]!r}")
        count += marker == "s"
        pieces += [sql[index:found], f"${count}" if marker == "s" else "%"]
        index = found + 2
    if count != len(params):
        raise ValueError(f"the statement has {count} placeholders for {len(params)} parameters")
    return "".join(pieces).encode(), [_dump(value) for value in params]


def _dump(value: Any) -> tuple[int, bytes | None, int]:
    if value is None:
        return 0, None, 0
    if isinstance(value, str):
        if "\0" in value:  # libpq would end the text there
            raise ValueError("PostgreSQL text cannot contain NUL characters")
        return 0, value.encode(), 0
    if isinstance(value, int) and not isinstance(value, bool):
        for size, oid in _INT_TYPES:
            if -(1 << (size * 8 - 1)) <= value < 1 << (size * 8 - 1):
                return oid, value.to_bytes(size, "big", signed=True), 1
    raise TypeError(f"cannot send {type(value).__name__} {value!r} as a parameter")


class Connection:
    """One autocommit connection to PostgreSQL. Text goes in UTF-8: the caller checks that the
    server expects it (`parameter("client_encoding")`)."""

    def __init__(self, conninfo: str) -> None:
        """Connect with the libpq `load()` returns (the caller checks it loads)."""
        self._lib = lib = load()
        self._conn = lib.PQconnectStart(conninfo.encode())
        if not self._conn:
            raise MemoryError("libpq could not allocate a connection")
        try:
            state = _POLLING_FAILED if lib.PQstatus(self._conn) == _BAD else _POLLING_WRITING
            while state not in (_POLLING_OK, _POLLING_FAILED):
                self._wait(state == _POLLING_READING)
                state = lib.PQconnectPoll(self._conn)
            if state == _POLLING_FAILED or lib.PQstatus(self._conn) != _OK:
                raise PqError(self._text(lib.PQerrorMessage(self._conn)).strip())
        except BaseException:
            self.close()
            raise

    def parameter(self, name: str) -> str | None:
        """A setting the server reported (`client_encoding`, ...), or None."""
        value = self._lib.PQparameterStatus(self._conn, name.encode())
        return None if value is None else self._text(value)

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[str | None, ...]]:
        """The rows `sql` returns, each value as text (None for NULL); PqError when it fails."""
        lib, conn = self._lib, self._conn
        query, dumped = convert(sql, params)
        count = len(dumped)
        types = (ctypes.c_uint * count)(*(oid for oid, _, _ in dumped))
        values = (ctypes.c_char_p * count)(*(data for _, data, _ in dumped))
        lengths = (ctypes.c_int * count)(*(len(data or b"") for _, data, _ in dumped))
        formats = (ctypes.c_int * count)(*(binary for _, _, binary in dumped))
        if not lib.PQsendQueryParams(conn, query, count, types, values, lengths, formats, 0):
            raise PqError(self._text(lib.PQerrorMessage(conn)).strip())
        while lib.PQisBusy(conn):
            self._wait(True)
            if not lib.PQconsumeInput(conn):
                raise PqError(self._text(lib.PQerrorMessage(conn)).strip())
        failure: PqError | None = None
        rows: list[tuple[str | None, ...]] = []
        while True:  # every result of the statement, then NULL
            result = lib.PQgetResult(conn)
            if not result:
                break
            try:
                if lib.PQresultStatus(result) in (_COMMAND_OK, _TUPLES_OK):
                    rows += self._rows(result)
                elif failure is None:
                    failure = self._failure(result)
            finally:
                lib.PQclear(result)
        if failure is not None:
            raise failure
        return rows

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """This connection inside BEGIN ... COMMIT (ROLLBACK when the block raises)."""
        self.rows("BEGIN")
        try:
            yield self
        except BaseException:
            if self._conn:
                try:
                    self.rows("ROLLBACK")
                except PqError:
                    pass  # the error that got us here says more
            raise
        self.rows("COMMIT")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Rows:
        """`rows` for code written against a psycopg connection (`.execute(...).fetchone()`)."""
        return _Rows(self.rows(sql, params))

    def close(self) -> None:
        if self._conn:
            conn, self._conn = self._conn, None
            self._lib.PQfinish(conn)

    def _wait(self, reading: bool) -> None:
        import select

        socket = self._lib.PQsocket(self._conn)
        if socket < 0:
            raise PqError(self._text(self._lib.PQerrorMessage(self._conn)).strip() or "no connection")
        select.select([socket] if reading else [], [] if reading else [socket], [])

    def _rows(self, result: Any) -> list[tuple[str | None, ...]]:
        lib = self._lib
        fields = range(lib.PQnfields(result))
        return [tuple(None if lib.PQgetisnull(result, row, field) else
                      ctypes.string_at(lib.PQgetvalue(result, row, field),
                                       lib.PQgetlength(result, row, field)).decode()
                      for field in fields)
                for row in range(lib.PQntuples(result))]

    def _failure(self, result: Any) -> PqError:
        lib = self._lib
        message = self._text(lib.PQresultErrorMessage(result))
        severity = self._text(lib.PQresultErrorField(result, _DIAG_SEVERITY) or b"")
        if severity and message.startswith(f"{severity}:"):
            message = message[len(severity) + 1:]
        sqlstate = lib.PQresultErrorField(result, _DIAG_SQLSTATE)
        return PqError(message.strip() or "no error details available",
                       sqlstate.decode("ascii", "replace") if sqlstate else None)

    @staticmethod
    def _text(data: bytes | None) -> str:
        return (data or b"").decode("utf-8", "replace")


class _Rows:
    """A statement's rows, read as a psycopg cursor reads them."""

    def __init__(self, rows: list[tuple[str | None, ...]]) -> None:
        self._rows = rows

    def fetchone(self) -> tuple[str | None, ...] | None:
        return self._rows[0] if self._rows else None
