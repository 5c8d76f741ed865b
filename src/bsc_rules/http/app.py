"""The Starlette application: ``POST /events``, reports, metrics and health.

:func:`create_app` takes a :class:`~bsc_rules.http.door.Door` (the scorecard behind its
writer thread), the tokens and a clock; it reads nothing from the environment itself.
Every answer to ``POST /events`` comes after the commit of what it reports.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from bsc_rules.calendar import parse_instant, to_us
from bsc_rules.clock import Clock
from bsc_rules.errors import StoreError
from bsc_rules.http.auth import Caller, TokenBook, credentials
from bsc_rules.http.binding import (
    HttpProblem,
    declared_length,
    items_of,
    mode_of,
    read_limited,
)
from bsc_rules.http.door import Busy, Door, Outcome, by_office
from bsc_rules.http.metrics import StateCollector
from bsc_rules.http.page import build_page, render_index, render_page
from bsc_rules.privacy import mask_text, mask_value

log = logging.getLogger("bsc_rules.http")
R = TypeVar("R")
RETRY_AFTER = "1"
#: Events a request may have judged on the event loop itself (about 1 ms of parsing);
#: larger batches go to the thread pool. Under the GIL the pool adds no parallelism, only
#: hand-offs: the server spent more CPU per event with it for batches of 100 (bench http).
INLINE_EVENTS = 100
_SPACED_OFFSET = re.compile(r" (\d{2}:\d{2})$")


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)
    return Response(body, status, headers, media_type="application/json")


def _problem(problem: HttpProblem) -> Response:
    return _json({"error": mask_text(problem.message)}, problem.status, problem.headers)


BUSY = HttpProblem(429, "the ingest queue is full; retry later", {"Retry-After": RETRY_AFTER})
RETRY = {"Retry-After": "5"}
UNREACHABLE = "the database cannot be reached"
UNAUTHORIZED = HttpProblem(
    401, "a valid token is required", {"WWW-Authenticate": 'Bearer realm="bsc-rules"'}
)


class Handlers:
    """The routes' handlers over the doors (one per office), token book and clock."""

    def __init__(
        self,
        doors: Door | Iterable[Door],
        tokens: TokenBook,
        clock: Clock,
        origins: frozenset[str] = frozenset(),
        rate: int | None = None,
    ) -> None:
        self.doors = by_office(doors)
        self.tokens, self.clock = tokens, clock
        self.origins, self.rate = origins, rate

    def _office_door(self, caller: Caller, office: str) -> Door:
        """The door of ``office``, if ``caller`` may read it (403) and it is served (404)."""
        if not caller.may_read(office):
            raise HttpProblem(403, f"this token reads only office {caller.office!r}")
        door = self.doors.get(office)
        if door is None:
            raise HttpProblem(404, f"office: no office {office!r} in this deployment")
        return door

    def _readable(self, caller: Caller) -> list[Door]:
        """The doors ``caller`` may read (403 when none)."""
        doors = [d for d in self.doors.values() if caller.may_read(d.office)]
        if not doors:
            raise HttpProblem(403, f"this token reads only office {caller.office!r}")
        return doors

    # ------------------------------------------------------------ writing

    async def post_events(self, request: Request) -> Response:
        try:
            office = self._writer(request)
            headers = request.headers
            mode = mode_of(headers)
            declared_length(headers)
            body = await read_limited(request.stream())
            items = items_of(mode, headers, body)
            door = self.doors.get(office)
            if door is None:  # a token of an office this deployment does not serve
                raise HttpProblem(403, f"office: {office!r} is not served here")
            outcomes = await self._ingest(door, items, office, mode == "batch")
        except HttpProblem as problem:
            _access(request, problem.status, None)
            return _problem(problem)
        if mode == "batch":
            _access(request, 200, office, len(outcomes))
            return _json({"results": [o.as_dict() for o in outcomes]})
        (outcome,) = outcomes
        _access(request, outcome.code, office)
        return _json({**outcome.as_dict(), "field": outcome.field}, outcome.code)

    @staticmethod
    def _token(request: Request, basic: bool) -> str | None:
        """The request's token (header or ``?access_token=``; HTTP Basic for readers);
        both at once, or a malformed header, is a 400."""
        given = credentials(
            request.headers.get("authorization"), request.query_params.get("access_token"), basic
        )
        if given.problem is not None:
            raise HttpProblem(400, given.problem)
        return given.token

    def _writer(self, request: Request) -> str:
        office = self.tokens.office_of(self._token(request, basic=False))
        if office is None:
            raise UNAUTHORIZED
        return office

    async def _ingest(
        self, door: Door, items: list[Any], office: str, batch: bool
    ) -> list[Outcome]:
        """Judge the events before the writer's queue (a batch of more than
        :data:`INLINE_EVENTS` in the thread pool, not to hold the event loop for long),
        queue them, and wait for the writer's commit."""
        if not items:
            return []
        if door.busy():  # refused before spending the parsing on it
            raise BUSY
        if len(items) > INLINE_EVENTS:
            judged = await run_in_threadpool(door.judge, items, office, batch)
        else:
            judged = door.judge(items, office, batch)
        try:
            future = door.submit(judged)
        except Busy:
            raise BUSY from None
        try:
            return await asyncio.wrap_future(future)
        except (StoreError, sqlite3.Error) as exc:
            log.error(mask_text(f"{door.office} database unreachable: {exc}"))
            raise HttpProblem(503, f"{UNREACHABLE}; nothing was stored", RETRY) from None

    async def options_events(self, request: Request) -> Response:
        origin = request.headers.get("webhook-request-origin", "").strip()
        headers = {"Allow": "POST"}
        if origin and origin in self.origins:
            headers["WebHook-Allowed-Origin"] = origin
            headers["WebHook-Allowed-Rate"] = "*" if self.rate is None else str(self.rate)
        return Response(status_code=200, headers=headers)

    # ------------------------------------------------------------ reading

    def _reader(self, request: Request) -> Caller:
        caller = self.tokens.reader(self._token(request, basic=True))
        if caller is None:
            raise HttpProblem(
                401,
                "a valid token is required",
                {"WWW-Authenticate": 'Basic realm="bsc-rules", Bearer realm="bsc-rules"'},
            )
        return caller

    async def report(self, request: Request) -> Response:
        try:
            code = request.path_params["code"]
            door = self._office_door(self._reader(request), code)
            as_of, year = self._when(request)
            report = await _read(door.report, as_of, year)
        except HttpProblem as problem:
            _access(request, problem.status, None)
            return _problem(problem)
        _access(request, 200, code)
        return _json(mask_value(report.as_dict()))

    def _when(self, request: Request) -> tuple[int, int | None]:
        query = request.query_params
        text = query.get("as_of")
        try:
            as_of = self.clock.now() if text is None else parse_instant(_plus(text))
        except ValueError as exc:
            raise HttpProblem(400, f"as_of: {exc}") from None
        year = query.get("year")
        if year is not None and not (year.isdigit() and 1900 <= int(year) <= 9999):
            raise HttpProblem(400, f"year: expected a year such as 2017, got {year!r}")
        return to_us(as_of), None if year is None else int(year)

    async def metrics(self, request: Request) -> Response:
        try:
            doors = self._readable(self._reader(request))
            registry = CollectorRegistry(auto_describe=False)
            registry.register(StateCollector(doors, lambda: to_us(self.clock.now())))
            body = await _read(generate_latest, registry)
        except HttpProblem as problem:
            return _problem(problem)
        return Response(body, 200, media_type=CONTENT_TYPE_LATEST)

    async def status_page(self, request: Request) -> Response:
        """One office's page where the caller reads one office (or the deployment has
        one), else the list of the offices, each linking to its page."""
        try:
            doors = self._readable(self._reader(request))
            now = to_us(self.clock.now())
            if len(doors) == 1:
                html = await _read(_page, doors[0], now)
            else:
                html = await _read(_index, doors, now)
        except HttpProblem as problem:
            _access(request, problem.status, None)
            return _problem(problem)
        _access(request, 200, doors[0].office if len(doors) == 1 else None)
        return HTMLResponse(html)

    async def office_page(self, request: Request) -> Response:
        try:
            code = request.path_params["code"]
            door = self._office_door(self._reader(request), code)
            html = await _read(_page, door, to_us(self.clock.now()))
        except HttpProblem as problem:
            _access(request, problem.status, None)
            return _problem(problem)
        _access(request, 200, code)
        return HTMLResponse(html)

    async def healthz(self, request: Request) -> Response:
        return _json({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        problem = await run_in_threadpool(self._ready)
        if problem is None:
            return _json({"status": "ready"})
        return _json({"status": "not ready", "error": problem}, 503)

    def _ready(self) -> str | None:
        for office, door in self.doors.items():
            problem = door.ready()
            if problem is not None:
                return problem if len(self.doors) == 1 else f"{office}: {problem}"
        return None


async def _read(work: Callable[..., R], *args: Any) -> R:
    """``work(*args)`` in the thread pool; a database out of reach is a 503."""
    try:
        return await run_in_threadpool(work, *args)
    except (StoreError, sqlite3.Error) as exc:
        log.error(mask_text(f"database unreachable: {exc}"))
        raise HttpProblem(503, f"{UNREACHABLE}; try again later", RETRY) from None


def _page(door: Door, now_us: int) -> str:
    """The office's status page as it stands at ``now_us``."""
    with door.reading() as card:
        report = card.report_at(now_us)
        return render_page(build_page(card.rules, report, door.store.db))


def _index(doors: list[Door], now_us: int) -> str:
    """The offices' list: each office's KPIs counted by status, linked to its page."""
    rows = []
    for door in doors:
        with door.reading() as card:
            report = card.report_at(now_us)
            rows.append((door.office, card.rules.office.office.name, report))
    return render_index(rows, now_us)


def _plus(text: str) -> str:
    """An unencoded ``+`` before the offset arrives as a space: read it as ``+``."""
    return _SPACED_OFFSET.sub(r"+\1", text)


def _access(request: Request, status: int, office: str | None, count: int | None = None) -> None:
    """One log line per answer: method, path (never the query: it may hold a token). The
    path is the scope's: ``request.url`` would build the whole URL (host header parsed,
    reassembled) for every request."""
    extra = "" if count is None else f" events={count}"
    log.info(f"{office or '-'} {request.method} {request.scope['path']} {status}{extra}")


def create_app(
    doors: Door | Iterable[Door],
    tokens: TokenBook,
    clock: Clock,
    origins: frozenset[str] = frozenset(),
    rate: int | None = None,
    extra_routes: list[Route] | None = None,
) -> Starlette:
    """The ASGI application of the doors (one per office served)."""
    h = Handlers(doors, tokens, clock, origins, rate)
    routes: list[Route] = [
        Route("/events", h.post_events, methods=["POST"]),
        Route("/events", h.options_events, methods=["OPTIONS"]),
        Route("/offices/{code}/report", h.report, methods=["GET"]),
        Route("/metrics", h.metrics, methods=["GET"]),
        Route("/status", h.status_page, methods=["GET"]),
        Route("/offices/{code}/status", h.office_page, methods=["GET"]),
        Route("/healthz", h.healthz, methods=["GET"]),
        Route("/readyz", h.readyz, methods=["GET"]),
        *(extra_routes or []),
    ]
    return Starlette(routes=routes)
