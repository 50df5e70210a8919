"""Geodesy on image coordinates: great-circle distances in metres between (lat, lon) in degrees, and UTM grid
coordinates (CVACT's `utm`) to lat/lon."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

#: Mean Earth radius (IUGG), metres.
EARTH_RADIUS_M = 6_371_008.8


def haversine_m(lat1: np.ndarray | float, lon1: np.ndarray | float, lat2: np.ndarray | float,
                lon2: np.ndarray | float) -> np.ndarray:
    """Great-circle distance in metres between points given in degrees (broadcast; NaN in, NaN out).

    The haversine form stays accurate for the short distances retrieval errors are, wraps across the
    antimeridian (only the longitude difference's sine enters) and is clipped so rounding cannot push the
    arcsine's argument above 1 near antipodes and poles.
    """
    p1, p2 = np.radians(np.asarray(lat1, np.float64)), np.radians(np.asarray(lat2, np.float64))
    dlat = p2 - p1
    dlon = np.radians(np.asarray(lon2, np.float64) - np.asarray(lon1, np.float64))
    h = np.sin(dlat / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def utm_to_latlon(easting: np.ndarray | float, northing: np.ndarray | float, zone: int,
                  south: bool) -> tuple[np.ndarray, np.ndarray]:
    """WGS84 (lat, lon) in degrees of UTM grid coordinates in metres (NaN in, NaN out).

    PROJ (through pyproj) does the inverse transverse Mercator, so the conversion is exact to well below a
    millimetre anywhere in the zone, rather than a hand-kept series. `zone` is 1-60; `south` selects the
    southern hemisphere's false northing (10,000 km), e.g. zone 55 south for Canberra.
    """
    if not (isinstance(zone, int | np.integer) and 1 <= zone <= 60):
        raise ValueError(f"UTM zone must be an integer 1-60, got {zone!r}")
    x = np.asarray(easting, np.float64)
    y = np.asarray(northing, np.float64)
    transformer = _utm_transformer(int(zone), bool(south))
    lon, lat = transformer.transform(*np.broadcast_arrays(x, y))
    lat, lon = np.asarray(lat, np.float64), np.asarray(lon, np.float64)
    bad = ~(np.isfinite(lat) & np.isfinite(lon))  # PROJ answers inf for an unprojectable input
    return np.where(bad, np.nan, lat), np.where(bad, np.nan, lon)


@lru_cache(maxsize=8)
def _utm_transformer(zone: int, south: bool) -> Any:
    """A PROJ transformer from the WGS84 UTM zone's EPSG code (326zz north, 327zz south) to lon/lat; cached,
    since building one reads PROJ's database."""
    from pyproj import Transformer

    return Transformer.from_crs((32700 if south else 32600) + zone, 4326, always_xy=True)
