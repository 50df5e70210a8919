"""Great-circle distances and UTM -> lat/lon against hand-computed values and an independent forward series."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cvgl.geo import EARTH_RADIUS_M, haversine_m, utm_to_latlon

#: One degree of a great circle on the mean sphere: 6,371,008.8 m * pi / 180.
DEGREE_M = 111_195.0797

# ----------------------------------------------------------------------------------------------- haversine


def test_one_degree_of_latitude_and_of_longitude_on_the_equator() -> None:
    assert haversine_m(0.0, 0.0, 1.0, 0.0) == pytest.approx(DEGREE_M, abs=1e-3)
    assert haversine_m(45.0, 10.0, 46.0, 10.0) == pytest.approx(DEGREE_M, abs=1e-3)  # any meridian
    assert haversine_m(0.0, 30.0, 0.0, 31.0) == pytest.approx(DEGREE_M, abs=1e-3)
    # a degree of longitude at 60 degrees is half as long (to within the curvature of the small circle)
    assert haversine_m(60.0, 0.0, 60.0, 1.0) == pytest.approx(DEGREE_M / 2, rel=1e-4)


def test_across_the_antimeridian() -> None:
    near = 0.0002 * DEGREE_M  # 22.24 m
    assert haversine_m(0.0, 179.9999, 0.0, -179.9999) == pytest.approx(near, abs=1e-6)
    assert haversine_m(0.0, -179.9999, 0.0, 179.9999) == pytest.approx(near, abs=1e-6)
    # the same place written as 190 or -170 degrees east
    assert haversine_m(10.0, 190.0, 10.0, -170.0) == pytest.approx(0.0, abs=1e-6)


def test_near_and_at_the_poles() -> None:
    colat = 0.0001  # degrees from the pole
    assert haversine_m(90 - colat, 0.0, 90 - colat, 180.0) == pytest.approx(2 * colat * DEGREE_M, abs=1e-6)
    # a quarter turn around the pole: the flat right triangle's hypotenuse, colat * sqrt(2)
    assert haversine_m(90 - colat, 0.0, 90 - colat, 90.0) == pytest.approx(math.sqrt(2) * colat * DEGREE_M, abs=1e-5)
    assert haversine_m(90.0, 0.0, 90.0, 123.0) == pytest.approx(0.0, abs=1e-6)  # longitude is moot at the pole
    assert haversine_m(-90.0, 0.0, 90.0, 0.0) == pytest.approx(math.pi * EARTH_RADIUS_M, rel=1e-12)
    assert haversine_m(0.0, 0.0, 90.0, 45.0) == pytest.approx(math.pi / 2 * EARTH_RADIUS_M, rel=1e-12)


def test_antipodes_are_half_the_circumference_not_nan() -> None:
    half = math.pi * EARTH_RADIUS_M  # 20,015,114.4 m
    assert half == pytest.approx(20_015_114.4, abs=0.1)
    got = haversine_m([0.0, 10.0, -33.9], [0.0, 20.0, 18.4], [0.0, -10.0, 33.9], [180.0, -160.0, -161.6])
    assert np.allclose(got, half, rtol=0, atol=1.0)  # the arcsine's slope is infinite there: ~0.2 m of rounding


def test_vectorised_broadcast_and_nan() -> None:
    lat = np.array([0.0, 1.0, np.nan, 2.0])
    got = haversine_m(lat, 0.0, 0.0, 0.0)
    assert got.shape == (4,) and got.dtype == np.float64
    assert np.allclose(got[[0, 1, 3]], [0.0, DEGREE_M, 2 * DEGREE_M], atol=1e-3) and np.isnan(got[2])
    grid = haversine_m(np.zeros((3, 1)), np.array([[0.0], [1.0], [np.nan]]), 0.0, np.array([0.0, 1.0]))
    assert grid.shape == (3, 2) and np.isnan(grid[2]).all()
    assert np.allclose(grid[:2], [[0.0, DEGREE_M], [DEGREE_M, 0.0]], atol=1e-3)


# ----------------------------------------------------------------------------------------------------- UTM

WGS84_A, WGS84_F = 6_378_137.0, 1 / 298.257223563
K0, FALSE_EASTING, FALSE_NORTHING_SOUTH = 0.9996, 500_000.0, 10_000_000.0


def krueger_forward(lat: float, lon: float, zone: int) -> tuple[float, float]:
    """Lat/lon (degrees) -> UTM (easting, northing-from-the-equator) by Krueger's series in n to third order
    (Karney 2011, the formulas of Wikipedia's "Universal Transverse Mercator coordinate system"): mm-accurate
    inside a zone, and independent of PROJ, so it checks the inverse that cvgl uses."""
    n = WGS84_F / (2 - WGS84_F)
    a_rect = WGS84_A / (1 + n) * (1 + n**2 / 4 + n**4 / 64)
    alpha = (n / 2 - 2 * n**2 / 3 + 5 * n**3 / 16, 13 * n**2 / 48 - 3 * n**3 / 5, 61 * n**3 / 240)
    phi, dlam = math.radians(lat), math.radians(lon - (6 * zone - 183))
    c = 2 * math.sqrt(n) / (1 + n)
    t = math.sinh(math.atanh(math.sin(phi)) - c * math.atanh(c * math.sin(phi)))
    xi, eta = math.atan2(t, math.cos(dlam)), math.atanh(math.sin(dlam) / math.sqrt(1 + t * t))
    east = eta + sum(al * math.cos(2 * j * xi) * math.sinh(2 * j * eta) for j, al in enumerate(alpha, 1))
    north = xi + sum(al * math.sin(2 * j * xi) * math.cosh(2 * j * eta) for j, al in enumerate(alpha, 1))
    return FALSE_EASTING + K0 * a_rect * east, K0 * a_rect * north


def _error_m(lat: np.ndarray, lon: np.ndarray, want_lat: float, want_lon: float) -> float:
    return float(haversine_m(lat, lon, want_lat, want_lon))


def test_central_meridian_at_45_degrees_is_the_published_meridian_arc() -> None:
    """The WGS84 meridian arc from the equator to 45 degrees is 4,984,944.378 m; on the central meridian the
    grid northing is that arc times 0.9996 (north), or 10,000 km minus it (south)."""
    arc = K0 * 4_984_944.378
    lat, lon = utm_to_latlon(FALSE_EASTING, arc, zone=33, south=False)
    assert _error_m(lat, lon, 45.0, 15.0) < 0.01
    lat, lon = utm_to_latlon(FALSE_EASTING, FALSE_NORTHING_SOUTH - arc, zone=55, south=True)
    assert _error_m(lat, lon, -45.0, 147.0) < 0.01
    assert krueger_forward(45.0, 15.0, 33) == pytest.approx((FALSE_EASTING, arc), abs=0.01)  # the oracle too


@pytest.mark.parametrize("zone,lat,lon", [
    (55, -35.2809, 149.1300),  # Canberra, where CVACT was captured (2.1 degrees east of the meridian)
    (55, -35.35, 145.0),  # west of the meridian
    (55, -0.5, 150.0),  # just south of the equator
    (55, -79.0, 144.5),  # near the southern limit of UTM
    (16, 41.8781, -87.6298),  # Chicago, north
    (60, 64.0, 179.9),  # last zone, next to the antimeridian
    (1, -14.3, -170.7),  # first zone
])
def test_inverse_matches_the_forward_series_to_a_centimetre(zone: int, lat: float, lon: float) -> None:
    east, north = krueger_forward(lat, lon, zone)
    south = lat < 0
    got_lat, got_lon = utm_to_latlon(east, north + (FALSE_NORTHING_SOUTH if south else 0.0), zone, south)
    assert _error_m(got_lat, got_lon, lat, lon) < 0.01


def test_arrays_nan_and_bad_zones() -> None:
    pts = [(-35.28, 149.13), (-35.30, 149.10), (-35.25, 148.90)]
    en = np.array([krueger_forward(la, lo, 55) for la, lo in pts]) + [0.0, FALSE_NORTHING_SOUTH]
    lat, lon = utm_to_latlon(en[:, 0], en[:, 1], 55, True)
    assert lat.shape == (3,) and lat.dtype == np.float64
    assert (haversine_m(lat, lon, *np.array(pts).T) < 0.01).all()
    lat, lon = utm_to_latlon(np.array([en[0, 0], np.nan, 1e12]), np.array([en[0, 1], en[0, 1], en[0, 1]]), 55, True)
    assert _error_m(lat[0], lon[0], *pts[0]) < 0.01 and np.isnan(lat[1:]).all() and np.isnan(lon[1:]).all()
    lat, lon = utm_to_latlon(FALSE_EASTING, np.array([0.0, FALSE_NORTHING_SOUTH]), 55, True)  # broadcast
    assert lat.shape == (2,) and lat[1] == pytest.approx(0.0, abs=1e-9) and lon[1] == pytest.approx(147.0)
    for zone in (0, 61, 5.5):
        with pytest.raises(ValueError, match="UTM zone must be an integer 1-60"):
            utm_to_latlon(FALSE_EASTING, 0.0, zone, True)
