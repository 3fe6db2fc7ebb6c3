"""The retrieval service's FastAPI app: routes, request models, JSON errors.

API (JSON in, JSON out; every error is ``{"error": "<one line>", "status": <code>}``)::

    POST /search {"user_id": "u1", "k": 10, "exclude_seen": false, "fallback": true}
    POST /search {"vector": [dim floats], "k": 10}
    GET  /search?user_id=u1&k=10&exclude_seen=true      GET /search?vector=0.1,0.2,...&k=10
    GET|HEAD /healthz      GET /metrics (Prometheus text format)
    -> 200 {"ids": [...], "scores": [...], "k": 10, "source": "user_query" | "user_ur" | "vector" | "popularity",
            "index_version": "...", "model_version": "...", "ds": "...", "excluded": 0}

By user id: the user's query vector from the user table (``source`` names the table),
searched in the live index. A user the table does not know gets the popularity fallback
(``source: "popularity"``, ``scores`` = positive counts on the log's days up to the
index's ``ds``), unless the request says ``"fallback": false`` (then 404 naming the
user and the table). ``exclude_seen`` leaves out items the user had a positive with on
those days.

Statuses: 400 malformed JSON / HTTP, JSON nested too deep; 404 unknown path, unknown
user without fallback; 405 wrong method; 408 headers or body too slow; 413 body too
large; 422 a request that parses but is invalid (unknown field, both or neither of
user_id/vector, k not an integer, k <= 0 or above the index size or ``max_k``, vector of
the wrong dimension or with NaN/inf); 500 a bug (the service lives on); 503 no index
live yet, or the answer took longer than ``request_timeout_s``.
"""

from __future__ import annotations

import logging
import math
from typing import Annotated

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    model_validator,
)
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from retrieval import store
from retrieval.http_config import ServiceConfig
from retrieval.http_guard import Guard, HttpError, Metrics
from retrieval.http_served import Served
from retrieval.http_state import ServingState

log = logging.getLogger(__name__)

ROUTES = {"/search", "/healthz", "/metrics"}


class SearchRequest(BaseModel):
    """Body of ``POST /search``: exactly one of ``user_id`` and ``vector``."""

    model_config = ConfigDict(extra="forbid")

    user_id: str | None = Field(None, min_length=1, max_length=1024)
    vector: list[Annotated[float, Strict()]] | None = Field(None, min_length=1, max_length=65536)
    k: Annotated[int, Strict()] = Field(10, ge=1)
    exclude_seen: Annotated[bool, Strict()] = False
    fallback: Annotated[bool, Strict()] = True

    @model_validator(mode="after")
    def _one_query(self) -> SearchRequest:
        if (self.user_id is None) == (self.vector is None):
            raise ValueError("give exactly one of 'user_id' or 'vector'")
        if self.exclude_seen and self.user_id is None:
            raise ValueError("exclude_seen needs a user_id (a raw vector has no history)")
        return self


def _one_line(errors) -> tuple[int, str]:
    """(status, message) for pydantic/FastAPI validation errors: 400 for unparseable JSON,
    422 otherwise; every error on one line, each naming its field and the value given."""
    parts = []
    for e in errors:
        if e.get("type") == "json_invalid":
            return 400, f"body is not valid JSON: {e.get('ctx', {}).get('error', e.get('msg'))}"
        loc = [str(p) for p in e.get("loc", ()) if p not in ("body", "query")]
        msg = str(e.get("msg", "")).removeprefix("Value error, ")
        if e.get("type") == "missing" and not loc:
            msg = "a JSON body is required"
        elif e.get("type") == "model_type" and not loc:
            msg = "the body must be a JSON object"
        elif e.get("type") == "extra_forbidden":
            msg = "unknown field (expected user_id or vector, k, exclude_seen, fallback)"
        where = ".".join(loc)
        given = e.get("input")
        shown = (
            ""
            if e.get("type") in ("missing", "model_type") or where == "" or isinstance(given, (dict, list))
            else f" (got {given!r:.60})"
        )
        parts.append(f"{where}: {msg}{shown}" if where else msg)
    more = f" (+{len(parts) - 3} more)" if len(parts) > 3 else ""
    return 422, "; ".join(parts[:3]) + more if parts else "invalid request"


def create_app(state: ServingState, cfg: ServiceConfig | None = None) -> tuple[Guard, Metrics]:
    """The ASGI app (FastAPI inside :class:`Guard`) and its metrics."""
    cfg = cfg or state.cfg
    metrics = Metrics(state)
    app = FastAPI(title="lfm4ads retrieval", docs_url=None, redoc_url=None)

    @app.exception_handler(HttpError)
    async def _http_error(request: Request, e: HttpError):
        return JSONResponse({"error": e.message, "status": e.status}, e.status, headers=e.headers or None)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        status, message = _one_line(e.errors())
        return JSONResponse({"error": message, "status": status}, status)

    @app.exception_handler(StarletteHTTPException)
    async def _starlette(request: Request, e: StarletteHTTPException):
        if e.status_code == 404:
            message = f"no such path {request.url.path!r}; use POST|GET /search, GET|HEAD /healthz, GET /metrics"
        elif e.status_code == 405:
            allowed = sorted(
                {
                    m
                    for r in app.routes
                    if getattr(r, "path", None) == request.url.path
                    for m in getattr(r, "methods", ())
                }
            )
            message = f"method {request.method} not allowed on {request.url.path} (allowed: {', '.join(allowed)})"
            e.headers = {**(e.headers or {}), "Allow": ", ".join(allowed)}
        else:
            message = str(e.detail)
        return JSONResponse({"error": message, "status": e.status_code}, e.status_code, headers=e.headers)

    @app.exception_handler(Exception)
    async def _bug(request: Request, e: Exception):  # logged by Guard, which sees it re-raised
        return JSONResponse({"error": f"internal error: {type(e).__name__}: {e}", "status": 500}, 500)

    @app.api_route("/healthz", methods=["GET", "HEAD"])
    def healthz():
        served = state.served
        if served is None:
            raise HttpError(
                503,
                f"no index live under {state.root}"
                + (f"; {'; '.join(state.problems.values())}" if state.problems else ""),
            )
        m, u, h = served.index.manifest, served.users, served.history
        return {
            "status": "degraded" if state.problems else "ok",
            "problems": list(state.problems.values()),
            "index_version": m.version,
            "model_version": m.model_version,
            "ds": m.ds,
            "num_items": m.num_items,
            "dim": m.dim,
            "user_table": None
            if u is None
            else {"name": u.name, "ds": u.ds, "model_version": u.model_version, "table_version": u.table_version},
            "users": 0 if u is None else len(u.rows),
            "fallback": {
                "source": "popularity",
                "log_days": h.days,
                "items": int(h.popular_rows.size),
                "positives": h.positive_rows,
            },
            "reloads": state.reloads,
        }

    @app.get("/metrics")
    def prometheus():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    body_schema = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": SearchRequest.model_json_schema()}},
        }
    }

    @app.post("/search", openapi_extra=body_schema)
    async def search_post(request: Request):
        # pydantic parses and validates the bytes in one pass (cheaper than json.loads and
        # FastAPI's body dependency); the model still documents the body in /openapi.json
        body = await request.body()
        if not body.strip():
            raise HttpError(422, "a JSON body is required")
        try:
            req = SearchRequest.model_validate_json(body)
        except ValidationError as e:
            raise HttpError(*_one_line(e.errors())) from None
        return await _respond(req)

    @app.get("/search")
    async def search_get(
        user_id: str | None = Query(None, min_length=1, max_length=1024),
        vector: str | None = Query(None, description="Comma-separated floats."),
        k: int = Query(10, ge=1),
        exclude_seen: bool = False,
        fallback: bool = True,
    ):
        vec = None
        if vector is not None:
            try:
                vec = [float(x) for x in vector.split(",")]
            except ValueError:
                raise HttpError(422, "vector: must be comma-separated numbers") from None
        try:
            req = SearchRequest.model_validate(
                {"user_id": user_id, "vector": vec, "k": k, "exclude_seen": exclude_seen, "fallback": fallback}
            )
        except ValidationError as e:  # the same one-line message as POST
            raise HttpError(*_one_line(e.errors())) from None
        return await _respond(req)

    async def _respond(req: SearchRequest) -> JSONResponse:
        # One hop to a worker thread for the search (FAISS releases the GIL: searches run in
        # parallel while the loop parses the next requests). Async endpoints: a sync one
        # costs FastAPI several thread hops per request. A Response: no jsonable_encoder pass.
        return JSONResponse(await run_in_threadpool(_answer, state, cfg, metrics, req))

    return Guard(app, cfg, metrics, ROUTES), metrics


def _answer(state: ServingState, cfg: ServiceConfig, metrics: Metrics, req: SearchRequest) -> dict:
    served = state.served  # taken once: a swap mid-request cannot mix indexes or user tables
    if served is None:
        raise HttpError(503, f"no index live under {state.root}")
    m = served.index.manifest
    limit = min(cfg.max_k, m.num_items)
    if req.k > limit:
        what = f"the index size ({m.num_items} items)" if m.num_items <= cfg.max_k else f"max_k={cfg.max_k}"
        raise HttpError(422, f"k: {req.k} is above {what}")
    if req.vector is not None:
        out = _by_vector(served, _check_vector(req.vector, m.dim), req.k, None)
        source = "vector"
    else:
        out, source = _by_user(served, req)
    metrics.answers.labels(source).inc()
    return {
        **out,
        "k": req.k,
        "source": source,
        "index_version": m.version,
        "model_version": m.model_version,
        "ds": m.ds,
    }


def _check_vector(raw: list[float], dim: int) -> np.ndarray:
    if len(raw) != dim:
        raise HttpError(422, f"vector: has {len(raw)} values, the live index has dim {dim}")
    bad = next((i for i, x in enumerate(raw) if not math.isfinite(x)), None)
    if bad is not None:
        raise HttpError(422, f"vector: value {raw[bad]!r} at position {bad} is not a finite number")
    with np.errstate(over="ignore"):
        vec = np.asarray(raw, np.float32)
    if not np.isfinite(vec).all():  # finite as float64, overflows float32 (|x| > 3.4e38)
        bad = int(np.flatnonzero(~np.isfinite(vec))[0])
        raise HttpError(422, f"vector: value {raw[bad]!r} at position {bad} overflows float32")
    return vec


def _by_user(served: Served, req: SearchRequest) -> tuple[dict, str]:
    users, hist = served.users, served.history
    vec = None if users is None else users.lookup(req.user_id)
    seen = hist.seen(req.user_id) if req.exclude_seen else None
    if vec is not None:
        return _by_vector(served, vec, req.k, seen), users.name
    table = f"user table {users.name} (ds={users.ds}, {len(users.rows)} users)" if users else "no user table"
    if not req.fallback:
        raise HttpError(404, f"user_id {req.user_id!r} is not in {table}; the request disabled the fallback")
    if hist.popular_rows.size == 0:
        why = "no log" if not hist.log_path else f"no positives in the log up to ds={hist.ds}"
        raise HttpError(404, f"user_id {req.user_id!r} is not in {table}, and there is no popularity fallback ({why})")
    rows, counts = hist.popular(req.k, seen)
    return {
        "ids": served.index.ids[rows].tolist(),
        "scores": [float(c) for c in counts],
        "excluded": 0 if seen is None else int(seen.size),
    }, "popularity"


def _by_vector(served: Served, vec: np.ndarray, k: int, seen: np.ndarray | None) -> dict:
    index = served.index
    fetch = min(index.manifest.num_items, k + (0 if seen is None else int(seen.size)))
    ids, scores = store.search(index, vec, fetch)
    ids, scores = ids[0], scores[0]
    keep = ids != None  # noqa: E711 - object array: fewer than fetch items
    if seen is not None and seen.size:
        keep &= ~np.isin(ids, index.ids[seen])
    ids, scores = ids[keep][:k], scores[keep][:k]
    return {
        "ids": ids.tolist(),
        "scores": np.round(scores.astype(np.float64), 6).tolist(),
        "excluded": 0 if seen is None else int(seen.size),
    }
