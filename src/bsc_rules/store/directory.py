"""Several offices on one machine: a directory of SQLite files, ``DIR/<office>.db``.

The directory form of ``--db`` (service.md, "Deployments and --db"): an existing
directory, or a path ending in ``/``. Each office of the deployment has its own
:class:`~bsc_rules.store.sqlite.SQLiteStore` (its own ``UNIQUE (source, id)`` index, so
the key is ``(office, source, id)`` across the directory); events of an office that is not
in the deployment are rejected and kept in ``DIR/_rejected.db``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import orjson

from bsc_rules.errors import StoreError
from bsc_rules.events import Rejection, parse_line
from bsc_rules.store.sqlite import SQLiteStore

REJECTED = "_rejected"
_CODE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def is_directory_form(db: str | Path) -> bool:
    """Whether ``--db`` names the directory form: an existing directory, or a path
    ending in ``/`` (a directory to be created)."""
    text = str(db)
    return text.endswith(("/", os.sep)) or Path(text).is_dir()


def check_code(office: str) -> str:
    """An office code usable as a file name (``_`` starts only the directory's own files)."""
    if not _CODE.fullmatch(office):
        msg = (
            f"office: expected a code of lower-case letters, digits, '-' and '_' (not first),"
            f" got {office!r}"
        )
        raise StoreError(msg)
    return office


class OfficeDirectory:
    """The per-office SQLite files of a deployment in one directory."""

    def __init__(self, root: Path | str, offices: Iterable[str], *, create: bool = False) -> None:
        self.root = Path(root)
        self.offices = tuple(check_code(o) for o in offices)
        if not self.offices:
            raise StoreError(f"{self.root}: a deployment needs at least one office")
        if not self.root.is_dir():
            if not create:
                raise StoreError(f"the database directory {self.root} does not exist")
            try:  # owner-only, as each file is: the logs hold the offices' case data
                self.root.mkdir(mode=0o700, parents=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the database directory {self.root}: {exc}"
                ) from exc
        self._rejected: SQLiteStore | None = None

    def path(self, office: str) -> Path:
        """``DIR/<office>.db`` (``DIR/_rejected.db`` for the rejected of unknown offices)."""
        return self.root / f"{office}.db"

    def store(self, office: str) -> SQLiteStore:
        """A new store on one office's file (created if new); the caller closes it (a
        Scorecard closes its store)."""
        if office not in self.offices:
            known = ", ".join(self.offices)
            raise StoreError(f"{self.root}: office {office!r} is not in the deployment ({known})")
        return SQLiteStore(self.path(office))

    def rejected(self) -> SQLiteStore:
        """``DIR/_rejected.db``: the events of offices not in the deployment (opened on
        first use, closed with the directory)."""
        if self._rejected is None:
            self._rejected = SQLiteStore(self.path(REJECTED))
        return self._rejected

    def create_all(self) -> list[Path]:
        """Create (or upgrade) the file of every office: what ``ingest``, ``run``, ``serve``
        and ``db upgrade`` do first; return the paths."""
        for office in self.offices:
            self.store(office).close()
        return [self.path(o) for o in self.offices]

    def existing(self) -> list[str]:
        """The offices of the deployment that have a file already, in deployment order."""
        return [o for o in self.offices if self.path(o).is_file()]

    def route(
        self, lines: Iterable[tuple[int, bytes]], *, office: str | None = None, origin: str = ""
    ) -> Iterator[tuple[str, int, bytes]]:
        """``(office, line number, raw)`` for each line of a many-office file (see
        :func:`route`); a line of an office not in the deployment, or whose office cannot
        be told, is rejected into ``DIR/_rejected.db``."""

        def keep(rejection: Rejection) -> None:
            self.rejected().reject(rejection, origin)

        return route(lines, self.offices, keep, office=office)

    def close(self) -> None:
        if self._rejected is not None:
            self._rejected.close()
            self._rejected = None

    def __enter__(self) -> OfficeDirectory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _office_of(raw: bytes) -> str | None:
    """The ``office`` attribute of a line, if it is a JSON object with a string one."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    office = obj.get("office") if isinstance(obj, dict) else None
    return office if isinstance(office, str) else None


def route(
    lines: Iterable[tuple[int, bytes]],
    offices: Sequence[str],
    keep: Callable[[Rejection], None],
    *,
    office: str | None = None,
) -> Iterator[tuple[str, int, bytes]]:
    """``(office, line number, raw)`` for each line of a many-office file, by its ``office``
    attribute (else ``office``, else the deployment's only office); a line of an office not
    in ``offices``, or whose office cannot be told, goes to ``keep`` as a rejection. Lines
    not parsed here are validated by the office's scorecard."""
    default = office if office is not None else (offices[0] if len(offices) == 1 else None)
    for number, raw in lines:
        if not raw or raw.isspace():
            continue
        target = _office_of(raw) or default
        if target is not None and target in offices:
            yield target, number, raw
        else:
            keep(unknown_office(raw, number, target, offices))


def unknown_office(
    raw: bytes, number: int, target: str | None, offices: Sequence[str]
) -> Rejection:
    """The rejection of a line whose office is not in the deployment (or not told)."""
    parsed = parse_line(raw, number)
    if isinstance(parsed, Rejection) and target is None:
        return parsed  # not an event at all: its own reason
    known = ", ".join(offices)
    what = (
        f"expected one of the deployment's offices ({known}), got {target!r}"
        if target is not None
        else f"required where the deployment has several offices ({known}); or give --office"
    )
    event_id = None if isinstance(parsed, Rejection) else parsed.id
    source = None if isinstance(parsed, Rejection) else parsed.source
    return Rejection(what, field="office", line=number, event_id=event_id, source=source, raw=raw)
