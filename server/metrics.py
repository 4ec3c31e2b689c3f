"""Prometheus metrics: one registry per app, fed by the pipeline's and upstream's hooks.

``RelayMetrics`` implements ``events.core.pipeline.PipelineObserver``,
``events.core.relay.RelayObserver`` and ``services.upstream.client.UpstreamObserver``: counters and
histograms move when things happen.  Gauges (connections, streams, rooms) are read from
the live state when ``/metrics`` is scraped, never kept up to date event by event.

Several worker processes: by default every process serves its own numbers (scrape each
process; Prometheus's ``instance`` label tells them apart).  Workers that share one port
(``uvicorn --workers N``) run in prometheus-client's multiprocess mode instead: set
``PROMETHEUS_MULTIPROC_DIR`` to an empty directory in the environment of every worker;
then each worker writes its values there and any worker's ``/metrics`` reports the sum.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
from collections import Counter as Tally
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import prometheus_client
from fastapi import APIRouter, Header, HTTPException, status
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prom_multiprocess

from events.core.connections import Connections
from events.core.pipeline import RequestEnd
from services.generations import GenerationRegistry

logger = logging.getLogger(__name__)

TRANSPORTS = ("socketio", "websocket")
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)
DURATION_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 900)
UPSTREAM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
NO_CODE = "none"
MAX_MODEL_LABELS = 200  # per-model counters: bounded, whatever the upstream reports


def multiprocess_active() -> bool:
    """Is prometheus-client writing values to ``PROMETHEUS_MULTIPROC_DIR`` files?"""
    return prometheus_client.values.ValueClass is not prometheus_client.values.MutexValue


class RelayMetrics:
    def __init__(self, version: str, *, multiprocess_dir: Path | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        self.registry = r = CollectorRegistry()
        if multiprocess_dir is None:
            prometheus_client.ProcessCollector(registry=r)
            prometheus_client.PlatformCollector(registry=r)
        self._connections: Connections | None = None
        self._streams: GenerationRegistry | None = None
        self._ledger: Callable[[], tuple[int, int]] | None = None  # (pending, dropped)
        self._task: asyncio.Task[None] | None = None

        self._state_gauges(r, version)
        self._request_metrics(r)
        self._timing_metrics(r)
        self._upstream_and_access_metrics(r)
        for transport in TRANSPORTS:  # every transport shows, also at 0
            self.connections.labels(transport)
            self.requests_accepted.labels(transport)
            self.tokens.labels(transport)

    def _state_gauges(self, r: CollectorRegistry, version: str) -> None:
        """Gauges set from the live state at scrape time (and the build info)."""
        self.build_info = Gauge(
            "llm_relay_build_info",
            "Always 1; the version label says which build runs.",
            ["version"],
            registry=r,
            multiprocess_mode="max",
        )
        self.build_info.labels(version).set(1)
        self.connections = Gauge(
            "llm_relay_connections",
            "Open client connections.",
            ["transport"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.active_streams = Gauge(
            "llm_relay_active_streams",
            "Generations running now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.detached_streams = Gauge(
            "llm_relay_detached_streams",
            "Running generations whose client is gone (waiting RESUME_GRACE_S to be resumed).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.rooms = Gauge(
            "llm_relay_rooms",
            "Rooms with at least one member connected to this process.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.room_members = Gauge(
            "llm_relay_room_members",
            "Room memberships (connection, room) on this process.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.ledger_pending = Gauge(
            "llm_relay_ledger_pending",
            "Ledger rows and room messages waiting for the database on this process.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.ledger_dropped = Gauge(
            "llm_relay_ledger_dropped",
            "Rows this process dropped since it started (over DATABASE_MAX_PENDING).",
            registry=r,
            multiprocess_mode="livesum",
        )

    def _request_metrics(self, r: CollectorRegistry) -> None:
        """Counters of chat requests and what they relayed."""
        self.requests_accepted = Counter(
            "llm_relay_requests_accepted",
            "Chat requests accepted (a generation started).",
            ["transport"],
            registry=r,
        )
        self.requests = Counter(
            "llm_relay_requests",
            "Chat requests by how they ended: done, cancelled, error (accepted, then failed) "
            "or rejected (refused by validation or a limit); code is the error code or none.",
            ["transport", "outcome", "code"],
            registry=r,
        )
        self.tokens = Counter(
            "llm_relay_tokens_relayed",
            "token events sent to clients.",
            ["transport"],
            registry=r,
        )
        self.usage = Counter(
            "llm_relay_upstream_usage_tokens",
            "Tokens the upstream reported in usage.",
            ["kind"],
            registry=r,
        )
        self._model_labels: set[str] = set()
        self.model_tokens = Counter(
            "llm_relay_model_tokens",
            "Tokens per model as the upstream reported them (kind: prompt, completion).",
            ["model", "kind"],
            registry=r,
        )
        self.model_cost = Counter(
            "llm_relay_model_cost_usd",
            "Upstream-reported cost per model, in USD.",
            ["model"],
            registry=r,
        )

    def _timing_metrics(self, r: CollectorRegistry) -> None:
        """Time to first token and stream duration."""
        self.ttft = Histogram(
            "llm_relay_time_to_first_token_seconds",
            "From accepting a request to its first token.",
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            "llm_relay_stream_duration_seconds",
            "From accepting a request to its terminal event.",
            ["outcome"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )

    def _upstream_and_access_metrics(self, r: CollectorRegistry) -> None:
        """Upstream responses, latency and retries; resumes; refused connections."""
        self.upstream_responses = Counter(
            "llm_relay_upstream_responses",
            "Upstream HTTP responses by status.",
            ["status"],
            registry=r,
        )
        self.upstream_latency = Histogram(
            "llm_relay_upstream_response_seconds",
            "From sending the upstream request to its response headers.",
            buckets=UPSTREAM_BUCKETS,
            registry=r,
        )
        self.upstream_retries = Counter(
            "llm_relay_upstream_retries",
            "Upstream retries (before the first token) by reason.",
            ["reason"],
            registry=r,
        )
        self.resumes = Counter(
            "llm_relay_resumes",
            "resume requests by result: ok or the error code.",
            ["transport", "result"],
            registry=r,
        )
        self.refusals = Counter(
            "llm_relay_auth_refusals",
            "Connections refused, by error code.",
            ["transport", "code"],
            registry=r,
        )

    # -- live state, read at scrape time -------------------------------------------------

    def watch(self, connections: Connections, streams: GenerationRegistry) -> None:
        self._connections = connections
        self._streams = streams

    def watch_ledger(self, state: Callable[[], tuple[int, int]]) -> None:
        """``state()``: rows waiting for the database, rows dropped so far."""
        self._ledger = state

    def refresh(self) -> None:
        """Set the gauges from the live state."""
        if self._ledger is not None:
            pending, dropped = self._ledger()
            self.ledger_pending.set(pending)
            self.ledger_dropped.set(dropped)
        if self._connections is not None:
            conns = self._connections.all()
            by_transport = Tally(conn.transport for conn in conns)
            for transport in {*TRANSPORTS, *by_transport}:
                self.connections.labels(transport).set(by_transport[transport])
            rooms: set[str] = set()
            members = 0
            for conn in conns:
                rooms.update(conn.rooms)
                members += len(conn.rooms)
            self.rooms.set(len(rooms))
            self.room_members.set(members)
        if self._streams is not None:
            gens = self._streams.all()
            self.active_streams.set(len(gens))
            self.detached_streams.set(sum(1 for gen in gens if gen.conn_id is None))

    def render(self) -> bytes:
        self.refresh()
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        combined = CollectorRegistry()
        prom_multiprocess.MultiProcessCollector(combined, path=str(self.multiprocess_dir))  # type: ignore[no-untyped-call]
        return generate_latest(combined)

    async def start(self, refresh_s: float) -> None:
        """Multiprocess mode: other workers answer scrapes, so publish gauges regularly."""
        if self.multiprocess_dir is not None and self._task is None:
            self._task = asyncio.create_task(self._refresh_every(refresh_s))

    async def _refresh_every(self, seconds: float) -> None:
        while True:
            try:
                self.refresh()
            except Exception:
                logger.exception("refreshing the metrics gauges failed")
            await asyncio.sleep(seconds)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.multiprocess_dir is not None:
            # This process's live gauges no longer count once it is gone.
            prom_multiprocess.mark_process_dead(os.getpid(), str(self.multiprocess_dir))  # type: ignore[no-untyped-call]

    # -- events.core.pipeline.PipelineObserver ---------------------------------------------------

    def accepted(self, transport: str) -> None:
        self.requests_accepted.labels(transport).inc()

    def first_token(self, seconds: float) -> None:
        self.ttft.observe(seconds)

    def finished(self, end: RequestEnd) -> None:
        self.requests.labels(end.transport, end.outcome, end.code or NO_CODE).inc()
        self.duration.labels(end.outcome).observe(end.duration_s)
        if end.tokens:
            self.tokens.labels(end.transport).inc(end.tokens)
        model = self._model_label(end.model)
        for kind in ("prompt", "completion"):
            value = (end.usage or {}).get(f"{kind}_tokens")
            if isinstance(value, int) and value > 0:
                self.usage.labels(kind).inc(value)
                self.model_tokens.labels(model, kind).inc(value)
        cost = (end.usage or {}).get("cost")
        if isinstance(cost, int | float) and not isinstance(cost, bool) and cost > 0:
            self.model_cost.labels(model).inc(cost)

    def _model_label(self, model: str | None) -> str:
        """Models the upstream billed for; past ``MAX_MODEL_LABELS`` distinct ones, "other"."""
        name = (model or "unknown")[:200]
        if name not in self._model_labels:
            if len(self._model_labels) >= MAX_MODEL_LABELS:
                return "other"
            self._model_labels.add(name)
        return name

    # -- events.core.relay.RelayObserver ---------------------------------------------------------

    def rejected(self, transport: str, code: str) -> None:
        self.requests.labels(transport, "rejected", code).inc()

    def resumed(self, transport: str, result: str) -> None:
        self.resumes.labels(transport, result).inc()

    def refused(self, transport: str, code: str) -> None:
        self.refusals.labels(transport, code).inc()

    # -- services.upstream.client.UpstreamObserver -------------------------------------------------

    def on_response(self, status: int, latency_s: float) -> None:
        self.upstream_responses.labels(str(status)).inc()
        self.upstream_latency.observe(latency_s)

    def on_retry(self, reason: str) -> None:
        self.upstream_retries.labels(reason).inc()


def metrics_router(metrics: RelayMetrics, token: str | None) -> APIRouter:
    """``GET /metrics``; with ``METRICS_TOKEN`` set, only for ``Authorization: Bearer <it>``."""
    router = APIRouter(tags=["operations"])
    expected = f"Bearer {token}".encode() if token else None

    @router.get(
        "/metrics",
        summary="Prometheus metrics (text exposition format)",
        response_class=Response,
        responses={
            200: {
                "content": {CONTENT_TYPE_LATEST: {"example": _EXAMPLE}},
                "description": "The metrics of this process (or of all workers in "
                "multiprocess mode).",
            },
            401: {"description": "METRICS_TOKEN is set and the bearer token is missing or wrong"},
        },
    )
    async def metrics_endpoint(
        authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    ) -> Response:
        if expected is not None and not hmac.compare_digest(
            (authorization or "").encode(), expected
        ):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "A bearer token is required.",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router


_EXAMPLE = """\
# HELP llm_relay_connections Open client connections.
# TYPE llm_relay_connections gauge
llm_relay_connections{transport="socketio"} 12.0
llm_relay_connections{transport="websocket"} 1.0
# HELP llm_relay_requests_total Chat requests by how they ended ...
# TYPE llm_relay_requests_total counter
llm_relay_requests_total{code="none",outcome="done",transport="socketio"} 340.0
llm_relay_requests_total{code="upstream_unavailable",outcome="error",transport="socketio"} 2.0
"""
