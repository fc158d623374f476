"""Reading a tar archive from outside (`durable import`) in bounded memory. tarfile reads a pax or
GNU long-name header whole, at whatever size the header declares, before any member reaches our
checks (512 MiB of such a header gzip to 2 MiB), so each header block is checked as tarfile reads
it, and one declaring more than MAX_HEADER_BYTES is refused first.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import tarfile
from contextlib import contextmanager
from typing import IO, Any, Callable, Iterator, cast

from .errors import InvalidPayload

MAX_HEADER_BYTES = 1024 * 1024
"""The largest pax or long-name header accepted (a long run id needs a few hundred bytes)."""
_READ_WHOLE = {tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME,
               tarfile.GNUTYPE_LONGLINK}  # header types whose data tarfile reads in one piece
_DECOMPRESSORS: dict[bytes, Callable[[IO[bytes]], Any]] = {
    b"\x1f\x8b": lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"), b"BZh": bz2.BZ2File,
    b"\xfd7zXZ\x00": lzma.LZMAFile}


def _number(field: bytes) -> int:
    """A tar header's numeric field: octal text, or base-256 (a leading 0x80; 0xff is negative)."""
    if field[:1] in (b"\x80", b"\xff"):
        return int.from_bytes(field[1:], "big") if field[0] == 0x80 else -1
    return int(field.split(b"\0", 1)[0].strip() or b"0", 8)


def _check_header(block: bytes, where: str) -> bool:
    """Refuse `block` if it is a tar header (its checksum holds) that tarfile would read whole and
    that declares more than MAX_HEADER_BYTES, or a sparse member's (whose map tarfile reads block
    after block, as many as it says); True for a pax header. Any other block is left to tarfile."""
    try:
        stored, size = _number(block[148:156]), _number(block[124:136])
    except ValueError:
        return False
    rest = block[:148] + block[156:]
    unsigned = 256 + sum(rest)
    if stored not in (unsigned, unsigned - 256 * sum(1 for byte in rest if byte > 127)):
        return False
    kind = block[156:157]
    if kind in _READ_WHOLE and size > MAX_HEADER_BYTES:
        raise InvalidPayload(f"{where}: a member's header declares {size} bytes, more than an archive "
                             f"of runs holds ({MAX_HEADER_BYTES // 1024} KiB at most)")
    if kind == tarfile.GNUTYPE_SPARSE:
        raise InvalidPayload(f"{where}: a sparse member is not a run's export")
    return kind in (tarfile.XHDTYPE, tarfile.XGLTYPE)


class _Checked:
    """The archive's tar stream as tarfile reads it, each header block checked on its way."""

    def __init__(self, stream: Any, where: str) -> None:
        self._stream = stream
        self._where = where
        self._records_next = False  # a pax header was read: tarfile reads its records next, whole

    def read(self, size: int = -1) -> bytes:
        data: bytes = self._stream.read(size)
        records, self._records_next = self._records_next, False
        if records and b" GNU.sparse." in data:
            raise InvalidPayload(f"{self._where}: a sparse member is not a run's export")
        if len(data) == tarfile.BLOCKSIZE:  # how tarfile reads each header
            self._records_next = _check_header(data, self._where)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return int(self._stream.seek(offset, whence))

    def tell(self) -> int:
        return int(self._stream.tell())


@contextmanager
def open_archive(path: str) -> Iterator[tarfile.TarFile | None]:
    """The tar archive at `path` (plain, or compressed with gzip, bzip2 or xz), read with its
    headers checked; None when `path` holds no tar archive."""
    with open(path, "rb") as raw:
        magic = raw.read(6)
        raw.seek(0)
        decompress = next((open_ for start, open_ in _DECOMPRESSORS.items() if magic.startswith(start)), None)
        stream = decompress(raw) if decompress is not None else raw
        try:
            archive = tarfile.open(fileobj=cast(IO[bytes], _Checked(stream, path)), mode="r:")
        except tarfile.ReadError:
            archive = None
        try:
            yield archive
        finally:
            if archive is not None:
                archive.close()
            stream.close()
