"""Position history as files other tools read: JSON, GeoJSON, GPX 1.1 and CSV.

Paginated with an opaque keyset cursor (the position key of the last row sent),
so a page is one index range scan however deep into the range it is, and a
range is capped like the playback endpoint's. The next page's full URL is in the
``Link: <...>; rel="next"`` header (and in the body for JSON and GeoJSON).
Only accepted fixes: what a plausibility filter flagged stays out of exports.
"""

from __future__ import annotations

import base64
import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import asyncpg
import orjson
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from fleet_cloud.api.auth import CurrentUser
from fleet_cloud.api.errors import ERROR_RESPONSES, ApiError
from fleet_cloud.api.scoping import own_vehicle, time_range
from fleet_wire import is_valid_device_id

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES, tags=["exports"])

MAX_RANGE = timedelta(days=31)
MAX_PAGE = 50_000
DEFAULT_PAGE = 5_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class GpxResponse(Response):
    media_type = "application/gpx+xml"


class CsvResponse(Response):
    media_type = "text/csv"  # Starlette adds "; charset=utf-8" to text/*


class GeoJsonResponse(JSONResponse):  # a JSONResponse, so the body schema is documented
    media_type = "application/geo+json"


# Errors stay JSON on these routes: declared by content, since a "model" entry
# would be documented in the route's own media type (CSV, GPX).
JSON_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {
        "description": spec["description"],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
    }
    for code, spec in ERROR_RESPONSES.items()
}


class ExportFix(BaseModel):
    t: datetime = Field(description="fix time (UTC)")
    lat: float
    lon: float
    spd: float | None = Field(None, description="km/h")
    hdg: float | None = Field(None, description="degrees")
    alt: float | None = Field(None, description="metres")
    sat: int | None = None
    hdop: float | None = None


class PositionPage(BaseModel):
    vehicle_id: int
    positions: list[ExportFix]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null: done")


class PointGeometry(BaseModel):
    type: Literal["Point"] = "Point"
    coordinates: list[float] = Field(description="[lon, lat] or [lon, lat, alt] (WGS84)")


class FixProperties(BaseModel):
    t: datetime
    spd: float | None = None
    hdg: float | None = None
    sat: int | None = None
    hdop: float | None = None


class FixFeature(BaseModel):
    type: Literal["Feature"] = "Feature"
    geometry: PointGeometry
    properties: FixProperties


class FixCollection(BaseModel):
    type: Literal["FeatureCollection"] = "FeatureCollection"
    features: list[FixFeature]
    vehicle_id: int
    next_cursor: str | None


# Keyset pagination in the table's own key order within a fix time, so rows with
# the same fix time (two devices swapped in one vehicle) are neither lost nor repeated.
_PAGE = """
SELECT fix_time AS t, device_id, boot_id, seq, lat, lon, speed AS spd, heading AS hdg,
       altitude AS alt, sats AS sat, hdop
FROM positions
WHERE vehicle_id = $1 AND fix_time >= $2 AND fix_time < $3 AND filter_reason IS NULL
  AND ($5::timestamptz IS NULL OR (fix_time, device_id, boot_id, seq) > ($5, $6, $7, $8))
ORDER BY fix_time, device_id, boot_id, seq
LIMIT $4"""


def _encode_cursor(row: asyncpg.Record) -> str:
    us = (row["t"] - EPOCH) // timedelta(microseconds=1)
    key = [us, row["device_id"], row["boot_id"], row["seq"]]
    return base64.urlsafe_b64encode(orjson.dumps(key)).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str, int, int]:
    try:
        us, device, boot, seq = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * 3))
        if not all(isinstance(v, int) for v in (us, boot, seq)):
            raise TypeError
        if not (isinstance(device, str) and is_valid_device_id(device)):
            raise TypeError
        t = EPOCH + timedelta(microseconds=us)
        if not (-(2**63) <= boot < 2**63 and -(2**63) <= seq < 2**63):
            raise OverflowError
        return t, device, boot, seq
    except (ValueError, TypeError, OverflowError, OSError):  # binascii.Error is a ValueError
        raise ApiError(
            422, "invalid_request", "cursor: not a cursor from this API", "cursor"
        ) from None


class Page:
    """One page of rows (fetched limit + 1: the extra one only says there is more)."""

    def __init__(self, rows: list[asyncpg.Record], limit: int) -> None:
        self.rows = rows[:limit]
        self.next_cursor = _encode_cursor(self.rows[-1]) if len(rows) > limit else None
        self.next_url: str | None = None

    def headers(self) -> dict[str, str]:
        return {"Link": f'<{self.next_url}>; rel="next"'} if self.next_url else {}


Cursor = Annotated[
    str | None, Query(max_length=200, description="from the previous page's next_cursor / Link")
]
From = Annotated[datetime | None, Query(alias="from", description="ISO-8601; default: to - 24 h")]
To = Annotated[datetime | None, Query(description="ISO-8601; default: now; at most 31 days")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="fixes per page")]


async def _page(
    request: Request,
    user: CurrentUser,
    vehicle_id: int,
    from_: datetime | None,
    to: datetime | None,
    limit: int,
    cursor: str | None,
) -> Page:
    pool: asyncpg.Pool = request.app.state.pool
    await own_vehicle(pool, vehicle_id, user)
    start, end = time_range(from_, to, timedelta(hours=24), MAX_RANGE)
    after: tuple[Any, ...] = _decode_cursor(cursor) if cursor else (None, None, None, None)
    rows = await pool.fetch(_PAGE, vehicle_id, start, end, limit + 1, *after)
    # The next page repeats the resolved range, so "now" does not move under it.
    nxt = request.url.remove_query_params("cursor").include_query_params(
        **{"from": start.isoformat(), "to": end.isoformat(), "limit": limit}
    )
    page = Page(rows, limit)
    if page.next_cursor:
        page.next_url = str(nxt.include_query_params(cursor=page.next_cursor))
    return page


def _fix(r: asyncpg.Record) -> dict[str, Any]:
    return {k: r[k] for k in ("t", "lat", "lon", "spd", "hdg", "alt", "sat", "hdop")}


@router.get(
    "/vehicles/{vehicle_id}/positions.json",
    response_model=PositionPage,
    summary="Accepted fixes of a vehicle in fix-time order, one page",
)
async def positions_json(
    vehicle_id: int,
    user: CurrentUser,
    request: Request,
    response: Response,
    from_: From = None,
    to: To = None,
    limit: Limit = DEFAULT_PAGE,
    cursor: Cursor = None,
) -> PositionPage:
    page = await _page(request, user, vehicle_id, from_, to, limit, cursor)
    response.headers.update(page.headers())
    return PositionPage(
        vehicle_id=vehicle_id,
        positions=[ExportFix(**_fix(r)) for r in page.rows],
        next_cursor=page.next_cursor,
    )


@router.get(
    "/vehicles/{vehicle_id}/positions.geojson",
    response_model=FixCollection,
    response_class=GeoJsonResponse,
    summary="Accepted fixes as a GeoJSON FeatureCollection of points, one page",
    responses=JSON_ERRORS,
)
async def positions_geojson(
    vehicle_id: int,
    user: CurrentUser,
    request: Request,
    from_: From = None,
    to: To = None,
    limit: Limit = DEFAULT_PAGE,
    cursor: Cursor = None,
) -> Response:
    page = await _page(request, user, vehicle_id, from_, to, limit, cursor)
    features = []
    for r in page.rows:
        coords = [r["lon"], r["lat"]] + ([r["alt"]] if r["alt"] is not None else [])
        props = {k: r[k] for k in ("t", "spd", "hdg", "sat", "hdop")}
        features.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": coords},
                         "properties": props})  # fmt: skip
    body = {
        "type": "FeatureCollection",
        "features": features,
        "vehicle_id": vehicle_id,
        "next_cursor": page.next_cursor,
    }
    return Response(
        orjson.dumps(body), media_type=GeoJsonResponse.media_type, headers=page.headers()
    )


def _gpx_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@router.get(
    "/vehicles/{vehicle_id}/positions.gpx",
    response_class=GpxResponse,
    summary="Accepted fixes as a GPX 1.1 track, one page",
    responses={
        **JSON_ERRORS,
        200: {"content": {"application/gpx+xml": {"schema": {"type": "string"}}}},
    },
)
async def positions_gpx(
    vehicle_id: int,
    user: CurrentUser,
    request: Request,
    from_: From = None,
    to: To = None,
    limit: Limit = DEFAULT_PAGE,
    cursor: Cursor = None,
) -> GpxResponse:
    page = await _page(request, user, vehicle_id, from_, to, limit, cursor)
    out = io.StringIO()
    out.write('<?xml version="1.0" encoding="UTF-8"?>\n')
    out.write(
        '<gpx version="1.1" creator="fleet-telemetry" xmlns="http://www.topografix.com/GPX/1/1">\n'
    )
    out.write(f"<trk><name>vehicle {vehicle_id}</name><trkseg>\n")
    for r in page.rows:
        # GPX 1.1 fixes the child order: ele, time, ..., sat, hdop.
        out.write(f'<trkpt lat="{r["lat"]:.7f}" lon="{r["lon"]:.7f}">')
        if r["alt"] is not None:
            out.write(f"<ele>{r['alt']:.1f}</ele>")
        out.write(f"<time>{_gpx_time(r['t'])}</time>")
        if r["sat"] is not None:
            out.write(f"<sat>{max(0, r['sat'])}</sat>")
        if r["hdop"] is not None:
            out.write(f"<hdop>{r['hdop']:.2f}</hdop>")
        out.write("</trkpt>\n")
    out.write("</trkseg></trk>\n</gpx>\n")
    # Only numbers and fixed strings are written: nothing needs XML escaping.
    return GpxResponse(out.getvalue(), headers=page.headers())


CSV_COLUMNS = ("time", "lat", "lon", "speed_kmh", "heading_deg", "altitude_m", "sats", "hdop")


@router.get(
    "/vehicles/{vehicle_id}/positions.csv",
    response_class=CsvResponse,
    summary="Accepted fixes as CSV (header row; UTC ISO times; km/h, degrees, metres), one page",
    responses={**JSON_ERRORS, 200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
async def positions_csv(
    vehicle_id: int,
    user: CurrentUser,
    request: Request,
    from_: From = None,
    to: To = None,
    limit: Limit = DEFAULT_PAGE,
    cursor: Cursor = None,
) -> CsvResponse:
    page = await _page(request, user, vehicle_id, from_, to, limit, cursor)
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in page.rows:
        w.writerow(
            (r["t"].astimezone(UTC).isoformat(), r["lat"], r["lon"], _num(r["spd"]),
             _num(r["hdg"]), _num(r["alt"]), _num(r["sat"]), _num(r["hdop"]))
        )  # fmt: skip
    return CsvResponse(out.getvalue(), headers=page.headers())


def _num(v: float | int | None) -> str:
    return "" if v is None else str(v)
