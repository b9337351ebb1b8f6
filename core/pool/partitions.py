"""A pool that stays where it is: a folder of Parquet files registered as the project's pool, never
copied into the project database (issue 18).

Every file is a *partition*; the pool's items are numbered by a global ordinal (the partition's
``offset`` plus the row's position in its file), which is the order an in-process pool of the same
rows would have. The manifest records, per file, its rows, size and modification time, so a file
changed since it was registered is named and skipped rather than half-scored.

Checked when registering: every file is a readable Parquet file with the id and text columns, no id
or text is empty, and ids are unique within and across files. Each problem is one sentence naming
the file (and the row, for a row's problem).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from labelloop.core.util.errors import LabelloopError
from labelloop.core.util.safeio import atomic_write_text
from labelloop.core.util.textsafe import safe_line

MANIFEST_NAME = "pool.json"
MANIFEST_VERSION = 1


class PoolError(LabelloopError):
    """An external pool's folder or one of its files cannot be used (one sentence naming the file)."""


@dataclass
class Partition:
    path: str  # relative to the pool's folder
    rows: int
    offset: int  # the global ordinal of its first row
    size: int
    mtime_ns: int

    def stamp(self) -> tuple[int, int]:
        return (self.size, self.mtime_ns)


@dataclass
class PoolManifest:
    folder: str
    id_col: str = "id"
    text_col: str = "text"
    partitions: list[Partition] = field(default_factory=list)
    meta_cols: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return sum(p.rows for p in self.partitions)

    def file(self, part: Partition) -> Path:
        return Path(self.folder) / part.path

    def offsets(self) -> np.ndarray:
        return np.array([p.offset for p in self.partitions], dtype=np.int64)

    def locate(self, ords) -> tuple[np.ndarray, np.ndarray]:
        """(partition index, row within the file) of each global ordinal."""
        ords = np.asarray(ords, dtype=np.int64)
        if len(ords) and (ords.min() < 0 or ords.max() >= self.n):
            raise PoolError(f"ordinal outside the pool of {self.n:,} items")
        part = np.searchsorted(self.offsets(), ords, side="right") - 1
        return part, ords - self.offsets()[part]

    def to_json(self) -> str:
        d = {"version": MANIFEST_VERSION, **asdict(self)}
        return json.dumps(d, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str) -> "PoolManifest":
        try:
            d = json.loads(text)
            if d.get("version") != MANIFEST_VERSION:
                raise ValueError(f"version {d.get('version')!r}, expected {MANIFEST_VERSION}")
            parts = [
                Partition(**{k: p[k] for k in ("path", "rows", "offset", "size", "mtime_ns")}) for p in d["partitions"]
            ]
            for p in parts:
                if not isinstance(p.path, str) or Path(p.path).is_absolute() or ".." in Path(p.path).parts:
                    raise ValueError(f"partition path {p.path!r} is not inside the pool's folder")
                if not all(isinstance(x, int) and x >= 0 for x in (p.rows, p.offset, p.size, p.mtime_ns)):
                    raise ValueError(f"partition {p.path!r} has a negative or non-integer count")
            return cls(
                folder=str(d["folder"]),
                id_col=str(d["id_col"]),
                text_col=str(d["text_col"]),
                partitions=parts,
                meta_cols=[str(c) for c in d.get("meta_cols", [])],
            )
        except (ValueError, KeyError, TypeError) as e:
            raise PoolError(f"{where}: not a labelloop pool manifest ({e}).") from None


def manifest_path(project_dir: Path) -> Path:
    return Path(project_dir) / MANIFEST_NAME


def load_manifest(project_dir: Path) -> PoolManifest | None:
    """The project's external pool, or None when its pool is in the project database."""
    p = manifest_path(project_dir)
    if not p.exists():
        return None
    return PoolManifest.from_json(p.read_text(encoding="utf-8"), str(p))


def save_manifest(project_dir: Path, manifest: PoolManifest) -> None:
    atomic_write_text(manifest_path(project_dir), manifest.to_json() + "\n")


def parquet_files(folder: Path) -> list[Path]:
    """The folder's Parquet files, in a stable order (by relative path), hidden files left out."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PoolError(f"{folder}: not a folder of Parquet files.")
    files = [
        p
        for p in folder.rglob("*.parquet")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def _schema(path: Path, id_col: str, text_col: str) -> tuple[int, list[str]]:
    """(rows, column names) from the file's footer, or PoolError naming the file."""
    import polars as pl

    try:
        names = list(pl.read_parquet_schema(path))
        rows = int(pl.scan_parquet(path).select(pl.len()).collect().item())
    except Exception as e:  # a truncated or foreign file: the reader's message names the cause
        raise PoolError(f"{path}: not a readable Parquet file ({safe_line(str(e), 120)}).") from None
    for col in (id_col, text_col):
        if col not in names:
            raise PoolError(f"{path}: no '{col}' column (columns: {', '.join(names[:10])}).")
    return rows, names


def _check_rows(files: list[Path], id_col: str, text_col: str, known: list[Path] = ()) -> None:
    """Every row's id and text present, ids unique within and across ``files`` and ``known`` (files
    registered before): the first problem as PoolError naming the file and row."""
    import polars as pl

    def scan(f: Path, i: int):
        return pl.scan_parquet(f).select(pl.col(id_col).cast(pl.Utf8).alias("id"), pl.lit(i).alias("file"))

    try:
        for f in files:
            bad = (
                pl.scan_parquet(f)
                .with_row_index("row", offset=1)
                .filter(
                    pl.col(id_col).is_null()
                    | pl.col(text_col).is_null()
                    | (pl.col(text_col).cast(pl.Utf8).str.strip_chars() == "")
                )
                .select("row", pl.col(id_col).is_null().alias("no_id"))
                .head(1)
                .collect()
            )
            if bad.height:
                what = f"'{id_col}' is empty" if bad["no_id"][0] else f"'{text_col}' is empty"
                raise PoolError(f"{f}: row {bad['row'][0]}: {what}; nothing was registered.")
        allf = list(known) + list(files)
        dup = (
            pl.concat([scan(f, i) for i, f in enumerate(allf)])
            .group_by("id")
            .agg(pl.len().alias("n"), pl.col("file").min().alias("first"), pl.col("file").max().alias("last"))
            .filter(pl.col("n") > 1)
            .sort(["last", "id"])
            .head(1)
            .collect(engine="streaming")
        )
    except pl.exceptions.PolarsError as e:
        raise PoolError(f"{Path(files[0]).parent}: a file could not be read ({safe_line(str(e), 160)}).") from None
    if dup.height:
        first, last = allf[dup["first"][0]], allf[dup["last"][0]]
        where = str(last) if first == last else f"{last} (also in {first})"
        raise PoolError(
            f"{where}: id {safe_line(dup['id'][0], 60)!r} appears {dup['n'][0]} times; ids must be unique across "
            "the pool's files; nothing was registered."
        )


def register(folder: Path, id_col: str = "id", text_col: str = "text") -> PoolManifest:
    """The manifest of ``folder``'s Parquet files, every check passed (PoolError otherwise)."""
    folder = Path(folder).resolve()
    files = parquet_files(folder)
    if not files:
        raise PoolError(f"{folder}: no Parquet files in this folder.")
    parts, offset, meta_cols = [], 0, None
    for f in files:
        rows, names = _schema(f, id_col, text_col)
        st = os.stat(f)
        parts.append(Partition(f.relative_to(folder).as_posix(), rows, offset, st.st_size, st.st_mtime_ns))
        offset += rows
        extra = [c for c in names if c not in (id_col, text_col)]
        meta_cols = extra if meta_cols is None else [c for c in meta_cols if c in extra]
    _check_rows(files, id_col, text_col)
    return PoolManifest(str(folder), id_col, text_col, parts, meta_cols or [])


@dataclass
class Refresh:
    manifest: PoolManifest
    added: list[str]
    changed: list[str]
    missing: list[str]

    def lines(self) -> list[str]:
        out = [
            f"{len(self.added)} new file(s) registered ({sum(p.rows for p in self.manifest.partitions if p.path in self.added):,} items)"
        ]
        for name, what in ((self.changed, "changed since it was registered"), (self.missing, "missing")):
            for p in name:
                out.append(f"{p}: {what}; skipped when scoring until the pool is registered again")
        return out


def refresh(manifest: PoolManifest) -> Refresh:
    """New files in the folder appended (ordinals of the registered ones unchanged); changed and
    missing files reported."""
    folder = Path(manifest.folder)
    known = {p.path: p for p in manifest.partitions}
    files = parquet_files(folder)
    new_files = [f for f in files if f.relative_to(folder).as_posix() not in known]
    changed, missing = [], []
    for p in manifest.partitions:
        f = folder / p.path
        if not f.exists():
            missing.append(p.path)
        elif partition_changed(manifest, p):
            changed.append(p.path)
    parts = list(manifest.partitions)
    offset = manifest.n
    for f in new_files:
        rows, _names = _schema(f, manifest.id_col, manifest.text_col)
        st = os.stat(f)
        parts.append(Partition(f.relative_to(folder).as_posix(), rows, offset, st.st_size, st.st_mtime_ns))
        offset += rows
    if new_files:
        present = [folder / p.path for p in manifest.partitions if p.path not in missing]
        _check_rows(new_files, manifest.id_col, manifest.text_col, known=present)
    m = PoolManifest(manifest.folder, manifest.id_col, manifest.text_col, parts, manifest.meta_cols)
    return Refresh(m, [f.relative_to(folder).as_posix() for f in new_files], changed, missing)


def partition_changed(manifest: PoolManifest, part: Partition) -> bool:
    try:
        st = os.stat(manifest.file(part))
    except OSError:
        return True
    return (st.st_size, st.st_mtime_ns) != part.stamp()


def read_texts(manifest: PoolManifest, part: Partition) -> tuple[list[str], list[str]]:
    """(ids, texts) of one partition, in file order; PoolError naming the file when it cannot be read
    whole or has changed since it was registered."""
    import polars as pl

    f = manifest.file(part)
    if partition_changed(manifest, part):
        raise PoolError(f"{f}: changed or missing since the pool was registered (labelloop import --refresh).")
    try:
        t = pl.read_parquet(f, columns=[manifest.id_col, manifest.text_col])
    except Exception as e:
        raise PoolError(f"{f}: could not be read ({safe_line(str(e), 120)}).") from None
    if t.height != part.rows:
        raise PoolError(f"{f}: {t.height:,} rows where {part.rows:,} were registered.")
    ids = t.get_column(manifest.id_col).cast(pl.Utf8).to_list()
    texts = t.get_column(manifest.text_col).cast(pl.Utf8).to_list()
    return ids, texts
