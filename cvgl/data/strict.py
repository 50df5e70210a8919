"""Skip-or-raise handling of bad dataset entries, shared by the CVUSA, CVACT and VIGOR adapters.

Real releases have holes (CVACT lists ids whose files are missing, which upstream drops silently; hand-edited
split files gain stray lines; copies get truncated). `strict=True` stops at the first bad entry with a message
that names the file and the line, so a broken copy is never trained on by accident. `strict=False` drops the
affected pair/panorama and records (file, line, reason); the manifest stage writes those rows as `skipped.csv`
next to the manifests, so what was dropped stays visible.

Listing never decodes pixels: files are checked by one directory listing per folder. `verify_images=True` adds
PIL's `verify()` (header and, for PNG, chunk CRCs) plus a JPEG end-of-image check, because `verify()` does not
read JPEG scan data and would pass a truncated JPEG.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image, UnidentifiedImageError

from cvgl.io import Progress

SKIPPED_COLUMNS = ["file", "line", "reason"]
JPEG_EOI_WINDOW = 1024  # bytes searched for the end-of-image marker (0xFFD9 cannot occur inside scan data)


def empty_skipped() -> pd.DataFrame:
    """The header-only skipped table (a stable artifact even when nothing was dropped)."""
    return pd.DataFrame({"file": pd.Series([], dtype=object), "line": pd.Series([], dtype="int64"),
                         "reason": pd.Series([], dtype=object)})


class BadData:
    """Collects bad entries, or raises on the first one when strict.

    `line` is the 1-based line of a split file, the 1-based panoIds index for a `.mat` entry, and 0 for a
    problem with a whole file. Files are recorded relative to the dataset root so `skipped.csv` is portable.
    """

    def __init__(self, root: str | Path, strict: bool) -> None:
        self.root, self.strict = Path(root), strict
        self.rows: list[tuple[str, int, str]] = []

    def __call__(self, file: str | Path, line: int, reason: str, error: type[Exception] = ValueError) -> None:
        file = Path(file)
        where = f"{file}:{line}" if line else f"{file}"
        if self.strict:
            raise error(f"{where}: {reason}")
        try:
            rel = file.relative_to(self.root).as_posix()
        except ValueError:
            rel = file.as_posix()
        self.rows.append((rel, int(line), reason))

    def __len__(self) -> int:
        return len(self.rows)

    def frame(self) -> pd.DataFrame:
        if not self.rows:
            return empty_skipped()
        df = pd.DataFrame(self.rows, columns=SKIPPED_COLUMNS).astype({"file": object, "line": "int64",
                                                                     "reason": object})
        return df.sort_values(SKIPPED_COLUMNS).reset_index(drop=True)


class FileChecker:
    """Answers "is this file usable?" for paths under a root, with one directory listing per folder.

    One `scandir` per folder instead of one `stat` per file keeps listing 100k images fast on network file
    systems, and the answer does not depend on the order files are asked about.
    """

    def __init__(self, root: str | Path, verify_images: bool = False) -> None:
        self.root, self.verify_images = Path(root), verify_images
        self._dirs: dict[str, frozenset[str]] = {}

    def _listing(self, folder: str) -> frozenset[str]:
        if folder not in self._dirs:
            try:
                with os.scandir(folder) as it:
                    self._dirs[folder] = frozenset(e.name for e in it if e.is_file())
            except (FileNotFoundError, NotADirectoryError):
                self._dirs[folder] = frozenset()
        return self._dirs[folder]

    def exists(self, rel: str) -> bool:
        folder, name = os.path.split(os.path.normpath(os.path.join(self.root, rel)))
        return name in self._listing(folder)

    def problems(self, rels: list[str], threads: int = 8) -> dict[str, tuple[type[Exception], str]]:
        """Map each unusable path to (error type, reason); usable paths are absent from the result."""
        out: dict[str, tuple[type[Exception], str]] = {}
        present = []
        for rel in dict.fromkeys(rels):
            if self.exists(rel):
                present.append(rel)
            else:
                out[rel] = (FileNotFoundError, f"image {self.root / rel} does not exist")
        if self.verify_images and present:
            progress = Progress(len(present), "verify images")  # 100k headers take minutes: show it is moving
            with ThreadPoolExecutor(max(1, threads)) as pool:
                for rel, err in zip(present, pool.map(lambda r: verify_image(self.root / r), present), strict=True):
                    if err is not None:
                        out[rel] = (ValueError, f"image {self.root / rel} is unreadable ({err})")
                    progress.update(1)
        return out


def verify_image(path: str | Path) -> str | None:
    """None if the file looks like a complete image, else why not; never decodes pixels."""
    try:
        with Image.open(path) as im:
            fmt = im.format
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        return str(err) or type(err).__name__
    if fmt == "JPEG":
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - JPEG_EOI_WINDOW))
            if b"\xff\xd9" not in fh.read():
                return "truncated JPEG: no end-of-image marker"
    return None


@dataclass(frozen=True)
class PairEntry:
    """One listed one-to-one pair (CVUSA row, CVACT index) and where it was listed, for error messages."""

    split: str
    file: Path
    line: int
    ground: str
    satellite: str
    where: str = ""  # extra location for the message, e.g. "valSet.valInd(4) -> panoIds(17)"

    def reason(self, text: str) -> str:
        return f"{self.where}: {text}" if self.where else text


def usable_pairs(entries: list[PairEntry], bad: BadData, checker: FileChecker | None) -> list[PairEntry]:
    """Drop (or raise on) pairs that repeat an image or whose files are missing/unreadable.

    A path may not appear twice in one split, nor in train and in another split (that would leak test
    images into training); listing the same file in two evaluation splits (CVACT test and test_full) is fine.
    """
    kept, seen = [], {}
    for e in entries:
        g, s = ("ground", e.ground), ("satellite", e.satellite)
        if g in seen or s in seen:  # rare: only then build the message
            clash = next((f"{view} image {rel} already listed in split {split} at {file}:{line}"
                          for view, rel in (g, s) for split, file, line in seen.get((view, rel), ())
                          if split == e.split or "train" in (split, e.split)), None)
            if clash:
                bad(e.file, e.line, e.reason(clash))
                continue
        seen.setdefault(g, []).append((e.split, e.file, e.line))
        seen.setdefault(s, []).append((e.split, e.file, e.line))
        kept.append(e)
    if checker is None:
        return kept
    problems = checker.problems([p for e in kept for p in (e.satellite, e.ground)])
    if not problems:
        return kept
    out = []
    for e in kept:
        err = problems.get(e.satellite) or problems.get(e.ground)
        if err is None:
            out.append(e)
        else:
            view = "satellite" if e.satellite in problems else "ground"
            bad(e.file, e.line, e.reason(f"listed {view} {err[1]}"), err[0])
    return out


def require_splits(entries: list[PairEntry] | list[str], splits: list[str], source: str) -> None:
    """Even with strict=False a split must keep at least one item: an empty split is never a usable dataset."""
    have = {e if isinstance(e, str) else e.split for e in entries}
    missing = [s for s in splits if s not in have]
    if missing:
        raise ValueError(f"{source}: no usable pairs left in split(s) {missing}")
