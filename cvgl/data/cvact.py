"""CVACT adapter (docs/method.md §1.2): `ACT_data.mat` + `streetview/`, `satview_polish/` -> the design's manifests.

Splits: `train` = `trainSet.trainInd`, `test` = `valSet.valInd` (CVACT_val, the UCVGL evaluation set); both are
1-based indices into `panoIds`. Files: `streetview/{id}_grdView.jpg` and `satview_polish/{id}_satView_polish.jpg`.

Optional `test_full` (CVACT_test, 92,802 pairs; `include_test=True`). docs/method.md only says it lives in
`ANU_data_test` and that Sample4Geo evaluates on it, so this adapter takes, in order:
1. an index field in the same .mat: `valSetAll.valInd` (the field the public ACT_data.mat carries for the full
   test set) or `testSet.testInd`; images under `ANU_data_test/{streetview,satview_polish}/` if that folder
   exists, else under the same folders as train/test;
2. otherwise, Sample4Geo's layout: the ids present in both `ANU_data_test/streetview/*_grdView.jpg` and
   `ANU_data_test/satview_polish/*_satView_polish.jpg` (an id with only one of its two files is a bad entry).
If neither is there, `include_test=True` is an error.

Ids are split-scoped opaque hashes (`scoped_id`), because test and test_full may list the same files.
Bad entries (index out of range, repeated image, missing/unreadable file) raise when `strict`, else they are
dropped and reported in `Manifests.skipped`, where `line` is the 1-based position in the split's index vector.
A .mat that is unreadable or lacks a field always raises: skipping it would silently remove a whole split.
Upstream drops CVACT ids with missing files silently; here that needs `strict=False` and leaves a record.

Coordinates: `utm` (N x 2 easting, northing in metres, one row per `panoIds` entry) is converted to WGS84
`lat`/`lon` in UTM zone 55 south (Canberra, where CVACT was captured; `utm_zone`/`utm_south` override it). The
tile is centred on its panorama, so both images of a pair get the panorama's coordinates. A .mat without `utm`
gives NaN; a `utm` of the wrong shape always raises (a shifted matrix would misplace every image). An id that
is not in `panoIds` (Sample4Geo's folder listing of CVACT_test) has NaN coordinates.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from cvgl.data.manifest import Manifests, pair_manifests, scoped_id
from cvgl.data.strict import BadData, FileChecker, PairEntry, require_splits, usable_pairs
from cvgl.geo import utm_to_latlon

MAT_FILE = "ACT_data.mat"
SALT = "cvact"
GROUND_DIR, GROUND_SUFFIX = "streetview", "_grdView.jpg"
SAT_DIR, SAT_SUFFIX = "satview_polish", "_satView_polish.jpg"
SPLIT_FIELDS = {"train": ("trainSet", "trainInd"), "test": ("valSet", "valInd")}
TEST_FULL_FIELDS = (("valSetAll", "valInd"), ("testSet", "testInd"))
TEST_FULL_DIR = "ANU_data_test"
UTM_FIELD = "utm"
#: CVACT was captured in Canberra: UTM zone 55, southern hemisphere.
UTM_ZONE, UTM_SOUTH = 55, True


def load_mat(path: Path) -> dict[str, Any]:
    """Load a MATLAB file's variables; structs become objects with one attribute per field.

    v5/v7 files go through scipy; v7.3 (HDF5) files need h5py, and the error names the file and says so
    (scipy alone cannot read v7.3).
    """
    from scipy.io import loadmat
    from scipy.io.matlab import matfile_version

    if not path.exists():
        raise FileNotFoundError(f"{path}: CVACT metadata file does not exist")
    try:
        major, _ = matfile_version(str(path))
    except Exception as err:  # scipy raises several types for a non-MAT file
        raise ValueError(f"{path}: not a readable MATLAB .mat file ({err})") from None
    if major == 2:
        return _load_v73(path)
    try:
        return loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except Exception as err:
        raise ValueError(f"{path}: cannot read MATLAB file ({err})") from None


def _load_v73(path: Path) -> dict[str, Any]:
    try:
        import h5py
    except ImportError:
        raise ValueError(f"{path}: is a MATLAB v7.3 (HDF5) file; reading it needs h5py (pip install h5py), "
                         f"or re-save it in MATLAB with save(..., '-v7')") from None
    with h5py.File(path, "r") as f:
        return {k: _h5_value(f, f[k]) for k in f if not k.startswith("#")}


def _h5_value(f: Any, node: Any) -> Any:
    """Decode one MATLAB v7.3 node: struct group -> namespace, char -> str(s), cell -> list, numeric vector ->
    1-D, numeric matrix -> 2-D in MATLAB's (rows, columns) order."""
    import h5py

    if isinstance(node, h5py.Group):
        return SimpleNamespace(**{k: _h5_value(f, node[k]) for k in node})
    cls = node.attrs.get("MATLAB_class", b"")
    cls = cls.decode() if isinstance(cls, bytes) else str(cls)
    data = node[()]
    if cls == "char":  # MATLAB N x L chars are stored transposed, (L, N)
        data = np.atleast_2d(data)
        strings = ["".join(map(chr, data[:, n])) for n in range(data.shape[1])]
        return strings[0] if len(strings) == 1 else np.array(strings, dtype=object)
    if cls == "cell":
        return np.array([_h5_value(f, f[ref]) for ref in np.ravel(data, order="F")], dtype=object)
    if np.ndim(data) == 2 and min(np.shape(data)) > 1:  # a matrix (utm, N x 2): stored transposed, too
        return np.asarray(data).T
    return np.ravel(data)


def mat_field(mat: dict[str, Any], path: Path, name: str, field: str | None = None) -> Any:
    """A top-level variable (or struct field) of a loaded .mat; ValueError naming the file and field if absent."""
    if name not in mat:
        raise ValueError(f"{path}: missing field {name!r} (found {sorted(k for k in mat if not k.startswith('__'))})")
    value = mat[name]
    if field is None:
        return value
    if isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
        value = value.item()
    if not hasattr(value, field):
        raise ValueError(f"{path}: missing field {name}.{field}")
    return getattr(value, field)


def pano_id_strings(raw: Any, path: Path) -> list[str]:
    """`panoIds` as a list of str, whether stored as a char matrix (padded rows) or a cell array."""
    out = []
    for x in np.atleast_1d(np.asarray(raw, dtype=object)).ravel():
        if isinstance(x, np.ndarray):
            x = "".join(np.atleast_1d(x).astype(str).ravel())
        elif isinstance(x, bytes):
            x = x.decode()
        out.append(str(x).strip())
    if not out:
        raise ValueError(f"{path}: field 'panoIds' is empty")
    return out


def _indices(raw: Any) -> np.ndarray:
    return np.atleast_1d(np.asarray(raw)).ravel()


def has_mat_field(mat: dict[str, Any], name: str, field: str) -> bool:
    try:
        mat_field(mat, Path(), name, field)
    except ValueError:
        return False
    return True


def _index_entries(split: str, struct: str, field: str, raw: Any, ids: list[str], mat_path: Path,
                   folder: str, bad: BadData) -> list[PairEntry]:
    """One PairEntry per element of a 1-based index vector; bad indices go to `bad`."""
    entries = []
    values = _indices(raw)
    if values.size == 0:
        bad(mat_path, 0, f"{struct}.{field} is empty")
    for pos, v in enumerate(values, start=1):
        try:
            fv = float(v)
        except (TypeError, ValueError):
            bad(mat_path, pos, f"{struct}.{field}({pos}) = {v!r} is not a number")
            continue
        if not fv.is_integer() or not 1 <= fv <= len(ids):
            bad(mat_path, pos, f"{struct}.{field}({pos}) = {fv:g} is not a 1-based index into panoIds "
                               f"(1..{len(ids)})")
            continue
        pid = ids[int(fv) - 1]
        if not pid or "/" in pid or pid in (".", ".."):
            bad(mat_path, pos, f"{struct}.{field}({pos}) -> panoIds({int(fv)}) = {pid!r} is not a usable id")
            continue
        entries.append(PairEntry(split, mat_path, pos, _join(folder, GROUND_DIR, pid + GROUND_SUFFIX),
                                 _join(folder, SAT_DIR, pid + SAT_SUFFIX), f"{struct}.{field}({pos})"))
    return entries


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def _glob_test_full(root: Path, bad: BadData) -> list[PairEntry]:
    """Sample4Geo's CVACT_test listing: ids with both a ground and a satellite file in ANU_data_test/."""
    stems = {}
    for sub, suffix in ((GROUND_DIR, GROUND_SUFFIX), (SAT_DIR, SAT_SUFFIX)):
        folder = root / TEST_FULL_DIR / sub
        names = os.listdir(folder) if folder.is_dir() else []
        stems[sub] = {n[: -len(suffix)] for n in names if n.endswith(suffix)}
    grd, sat = stems[GROUND_DIR], stems[SAT_DIR]
    for sub, suffix, only, other in ((GROUND_DIR, GROUND_SUFFIX, grd - sat, SAT_DIR),
                                     (SAT_DIR, SAT_SUFFIX, sat - grd, GROUND_DIR)):
        for pid in sorted(only):
            bad(root / TEST_FULL_DIR / sub / (pid + suffix), 0, f"no matching image in {TEST_FULL_DIR}/{other}",
                FileNotFoundError)
    return [PairEntry("test_full", root / TEST_FULL_DIR, 0, _join(TEST_FULL_DIR, GROUND_DIR, pid + GROUND_SUFFIX),
                      _join(TEST_FULL_DIR, SAT_DIR, pid + SAT_SUFFIX)) for pid in sorted(grd & sat)]


def pano_coordinates(mat: dict[str, Any], path: Path, ids: list[str], zone: int = UTM_ZONE,
                     south: bool = UTM_SOUTH) -> dict[str, tuple[float, float]]:
    """Panorama id -> (lat, lon) from the `utm` field (empty if the .mat has none); the first row of a
    repeated id wins (a repeated id's images are rejected as repeated files anyway)."""
    if UTM_FIELD not in mat:
        return {}
    try:
        utm = np.asarray(mat[UTM_FIELD], dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: field {UTM_FIELD!r} is not a numeric matrix") from None
    if utm.shape == (2,) and len(ids) == 1:  # squeeze_me turns a 1 x 2 matrix into a vector
        utm = utm.reshape(1, 2)
    if utm.shape != (len(ids), 2):
        raise ValueError(f"{path}: field {UTM_FIELD!r} has shape {utm.shape}, expected ({len(ids)}, 2): "
                         f"easting, northing per panoIds entry")
    lat, lon = utm_to_latlon(utm[:, 0], utm[:, 1], zone, south)
    out: dict[str, tuple[float, float]] = {}
    for pid, la, lo in zip(ids, lat.tolist(), lon.tolist(), strict=True):
        out.setdefault(pid, (la, lo))
    return out


def _pano_id(entry: PairEntry) -> str:
    """The panorama id of a pair, from its ground file name."""
    return entry.ground.rsplit("/", 1)[-1][: -len(GROUND_SUFFIX)]


def build_cvact_manifests(root: str | Path, gt_ratio: float, seed: int, strict: bool = True,
                          include_test: bool = False, check_files: bool = True, verify_images: bool = False,
                          utm_zone: int = UTM_ZONE, utm_south: bool = UTM_SOUTH) -> Manifests:
    """List CVACT's train and val (= test) pairs, and optionally CVACT_test as `test_full`, as manifests,
    with each image's lat/lon from `utm` (zone `utm_zone`, southern hemisphere if `utm_south`)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset.root {root}: directory does not exist")
    mat_path = root / MAT_FILE
    mat = load_mat(mat_path)
    ids = pano_id_strings(mat_field(mat, mat_path, "panoIds"), mat_path)
    coords = pano_coordinates(mat, mat_path, ids, utm_zone, utm_south)
    bad = BadData(root, strict)
    raw = {split: mat_field(mat, mat_path, s, f) for split, (s, f) in SPLIT_FIELDS.items()}
    entries = [e for split, (s, f) in SPLIT_FIELDS.items()
               for e in _index_entries(split, s, f, raw[split], ids, mat_path, "", bad)]
    splits = list(SPLIT_FIELDS)
    if include_test:
        field = next((sf for sf in TEST_FULL_FIELDS if has_mat_field(mat, *sf)), None)
        if field is not None:
            folder = TEST_FULL_DIR if (root / TEST_FULL_DIR).is_dir() else ""
            entries += _index_entries("test_full", *field, mat_field(mat, mat_path, *field), ids, mat_path,
                                      folder, bad)
        elif (root / TEST_FULL_DIR).is_dir():
            entries += _glob_test_full(root, bad)
        else:
            wanted = " or ".join(f"{s}.{f}" for s, f in TEST_FULL_FIELDS)
            raise ValueError(f"{mat_path}: include_test needs CVACT_test: missing field {wanted}, "
                             f"and no {root / TEST_FULL_DIR} folder")
        splits.append("test_full")
    entries = usable_pairs(entries, bad, FileChecker(root, verify_images) if check_files else None)
    require_splits(entries, splits, f"{mat_path} (CVACT)")
    nowhere = (float("nan"), float("nan"))

    def locate(e: PairEntry) -> tuple[float, float, float, float]:
        lat, lon = coords.get(_pano_id(e), nowhere)
        return lat, lon, lat, lon  # the tile is centred on the panorama

    return pair_manifests(entries, lambda view, e: scoped_id(view, e.split, getattr(e, view), SALT), gt_ratio, seed,
                          bad.frame(), locate)
