"""The synthetic world's knobs: ``SynthConfig`` (one flat dataclass, mapping 1:1 onto ``config.yaml``'s ``synth``)
and how a partial mapping becomes one, checked key by key."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from cvgl.geometry import bev_half_extent_m, cvusa_band_height
from cvgl.synth.render import RenderKnobs, RenderSpec
from cvgl.synth.world import WorldSpec

#: On-disk layouts ``write_synthetic`` can write (``SynthConfig.layout``).
LAYOUTS = ("cvusa", "cvact", "vigor")
#: The four VIGOR cities (docs/method.md §1.3); ``vigor_cities`` picks synthetic areas named after them.
VIGOR_CITIES = ("Chicago", "NewYork", "SanFrancisco", "Seattle")


@dataclass(frozen=True)
class SynthConfig(WorldSpec, RenderKnobs):
    """Every knob of the synthetic world and its rendering (flat, so it maps 1:1 onto ``config.yaml``).

    The world's and the renderer's knobs are inherited from ``WorldSpec`` and ``RenderKnobs``, so their
    defaults live in one place.
    """

    # dataset size and sampling
    train_locations: int = 1200
    test_locations: int = 400
    min_spacing_m: float = 40.0
    # cameras and sensor styles: inherited from RenderKnobs (tile extent = +-camera_height * tan(fov/2))
    jpeg_quality: int = 90
    # on-disk layout: "cvusa" (CVUSA band panoramas), "cvact" or "vigor" (full 2:1 panoramas)
    layout: str = "cvusa"
    # VIGOR only: one synthetic area (its own world) per name, a subset of the four VIGOR cities
    vigor_cities: tuple[str, ...] = ("Chicago", "NewYork")

    @property
    def full_panorama(self) -> bool:
        """True for the layouts with full 2:1 equirectangular panoramas (CVACT, VIGOR)."""
        return self.layout != "cvusa"

    @property
    def pano_height(self) -> int:
        """Height of the CVUSA band (1232:224 aspect), or W/2 for a full 2:1 panorama."""
        return self.pano_width // 2 if self.full_panorama else cvusa_band_height(self.pano_width)

    @property
    def tile_half_extent_m(self) -> float:
        """Half side of a tile in metres, equal to the BEV projection's extent."""
        return bev_half_extent_m(self.camera_height, self.fov_deg)

    def world_spec(self) -> WorldSpec:
        return WorldSpec(**{f.name: getattr(self, f.name) for f in dataclasses.fields(WorldSpec)})

    def render_spec(self, styled: bool = True) -> RenderSpec:
        names = {f.name for f in dataclasses.fields(RenderSpec)} - {"pano_height", "styled", "band"}
        return RenderSpec(pano_height=self.pano_height, styled=styled, band=not self.full_panorama,
                          **{name: getattr(self, name) for name in names})


def synth_config_from_dict(d: dict) -> SynthConfig:
    """Build a config from a (possibly partial) mapping.

    Unknown keys and unusable values raise ValueError naming the key as ``synth.<key>``.
    """
    fields = {f.name: f for f in dataclasses.fields(SynthConfig)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ValueError(f"unknown config key synth.{unknown[0]} (known: {', '.join(sorted(fields))})")
    values = {}
    for key, value in d.items():
        default = fields[key].default
        if isinstance(default, tuple) and default and isinstance(default[0], str):
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"synth.{key} must be a list of names, got {value!r}")
            value = tuple(value)
        elif isinstance(default, tuple):
            if not isinstance(value, (list, tuple)) or len(value) != len(default):
                raise ValueError(f"synth.{key} must be a list of {len(default)} numbers, got {value!r}")
            value = tuple(float(v) for v in value)
        elif isinstance(default, bool):
            value = bool(value)
        elif isinstance(default, int):
            value = int(value)
        elif isinstance(default, float):
            value = float(value)
        values[key] = value
    cfg = SynthConfig(**values)
    _validate(cfg)
    return cfg


def _validate(cfg: SynthConfig) -> None:
    """Reject values that cannot produce a dataset, naming the key."""
    positive = ["train_locations", "test_locations", "tile_size", "pano_width", "camera_height", "resolution",
                "min_spacing_m", "block_min_m", "road_width_min_m", "max_view_distance_m", "fog_distance_m",
                "pano_row_supersample", "building_size_min_m", "crown_radius_min_m"]
    for key in positive:
        if getattr(cfg, key) <= 0:
            raise ValueError(f"synth.{key} must be > 0, got {getattr(cfg, key)}")
    ordered = [("block_min_m", "block_max_m"), ("road_width_min_m", "road_width_max_m"),
               ("building_size_min_m", "building_size_max_m"),
               ("building_height_min_m", "building_height_max_m"),
               ("tree_height_min_m", "tree_height_max_m"), ("crown_radius_min_m", "crown_radius_max_m")]
    for lo, hi in ordered:
        if getattr(cfg, lo) > getattr(cfg, hi):
            raise ValueError(f"synth.{lo} must be <= synth.{hi}")
    if not 0 < cfg.fov_deg < 180:
        raise ValueError(f"synth.fov_deg must be in (0, 180), got {cfg.fov_deg}")
    if not 1 <= cfg.jpeg_quality <= 100:
        raise ValueError(f"synth.jpeg_quality must be in [1, 100], got {cfg.jpeg_quality}")
    if cfg.layout not in LAYOUTS:
        raise ValueError(f"synth.layout must be one of {', '.join(LAYOUTS)}, got {cfg.layout!r}")
    if cfg.full_panorama and cfg.pano_width % 2:
        raise ValueError(f"synth.pano_width must be even for the 2:1 panoramas of layout {cfg.layout}, "
                         f"got {cfg.pano_width}")
    cities = cfg.vigor_cities
    if not cities or any(c not in VIGOR_CITIES for c in cities) or len(set(cities)) != len(cities):
        raise ValueError(f"synth.vigor_cities must be distinct names among {', '.join(VIGOR_CITIES)}, "
                         f"got {list(cities)}")


def config_dict(cfg: SynthConfig) -> dict:
    """The config as a JSON-ready mapping (tuples as lists), in field order."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}
