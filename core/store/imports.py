"""``labelloop import``: CSV, TSV, JSONL and Parquet, streamed through DuckDB's readers.

Validation is all-or-nothing by default: every problem is collected with its
file, row and column, and nothing is written unless the file is clean. The
whole import is one transaction, so a crash or ``kill -9`` part-way leaves the
store exactly as it was. With ``skip_invalid`` the valid rows are imported and
the rejected ones written, with their reasons, beside the input file.

Rows are numbered from 1, header excluded (CSV/TSV: records; JSONL: non-empty
lines; Parquet: rows in file order).
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from labelloop.core.store import utcnow
from labelloop.core.store.project import Project
from labelloop.core.util.errors import InputFileError, RowProblem, ValidationError
from labelloop.core.util.faults import fault_point
from labelloop.core.util.safeio import atomic_write_text
from labelloop.core.util.textsafe import clean

FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
SPLIT_VALUES = {
    "pool": "pool",
    "train": "pool",
    "unlabelled": "pool",
    "unlabeled": "pool",
    "": "pool",
    "test": "test",
    "gold": "gold",
}
ROW_COL = "__labelloop_row"
MAX_REPORTED = 1000  # problems kept per check; counts are exact


@dataclass
class ImportReport:
    source: str
    format: str
    rows_read: int
    rows_imported: int
    rows_rejected: int
    labelled: int
    splits: dict[str, int] = field(default_factory=dict)
    rejects_file: str | None = None
    seconds: float = 0.0
    duplicates: dict[str, int] = field(default_factory=dict)  # see _Importer._duplicates
    deduped: int = 0  # rows dropped by --dedupe

    def duplicate_lines(self) -> list[str]:
        """What import says about exact duplicate texts (counts), and what --dedupe did."""
        d = self.duplicates
        out = []
        if d.get("ids_nfc"):
            out.append(
                f"Ids: {d['ids_nfc']:,} ids were written in a decomposed Unicode form and are stored in NFC "
                "(an accented letter as one character), so each names one item however it is typed."
            )
        if d.get("in_file"):
            out.append(f"Duplicates: {d['in_file']:,} rows repeat the exact text of an earlier row in this file.")
        if d.get("in_project"):
            out.append(f"Duplicates: {d['in_project']:,} rows repeat the exact text of an item already in the project.")
        if d.get("pool_vs_eval"):
            out.append(
                f"Leakage: {d['pool_vs_eval']:,} pool rows have the exact text of a test or gold item "
                "(it inflates every test metric)."
            )
        if self.deduped:
            out.append(
                f"--dedupe dropped {self.deduped:,} duplicate rows (the first copy of each text stays; a test "
                "or gold copy wins over a pool copy)."
            )
        elif out:
            out.append("Use --dedupe to keep only the first copy of each text.")
        return out


def detect_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    for s in reversed(suffixes):
        if s in FORMATS:
            return FORMATS[s]
    raise InputFileError(
        f"{path}: unknown file type; use .csv, .tsv, .jsonl or .parquet (optionally .gz for text files)."
    )


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _Importer:
    def __init__(
        self,
        project: Project,
        path: Path,
        *,
        text_col: str,
        id_col: str | None,
        label_col: str | None,
        split_col: str | None,
        meta_cols: list[str] | None,
        skip_invalid: bool,
        fmt: str | None,
        actor: str | None,
        label_sep: str,
        dedupe: bool = False,
        rejects_path: Path | str | None = None,
        prelabel_pool: bool = True,
        source_name: str | None = None,
    ):
        self.project = project
        self.cfg = project.config
        self.con = project.store.con
        self.path = path
        self.fmt = fmt or detect_format(path)
        self.text_col, self.id_col, self.label_col, self.split_col = text_col, id_col, label_col, split_col
        self.meta_cols = meta_cols
        self.skip_invalid = skip_invalid
        self.actor = actor or f"import:{path.name}"
        self.label_sep = label_sep
        self.dedupe = dedupe
        self.rejects_path = Path(rejects_path) if rejects_path else None
        self.prelabel_pool = prelabel_pool
        self.source_name = source_name
        self.problems: list[RowProblem] = []
        self.problem_total = 0
        self._raw_rejects: list[str] = []
        self.structural_rejects: list[tuple[int, str | None, str, str]] = []  # row, column, reason, raw
        self._tmpfiles: list[str] = []

    # -- reading -----------------------------------------------------------
    def _reader_sql(self, path: str) -> str:
        p = "'" + path.replace("'", "''") + "'"
        if self.fmt in ("csv", "tsv"):
            delim = "," if self.fmt == "csv" else "\\t"
            return (
                f"read_csv({p}, header=true, delim=E'{delim}', quote='\"', escape='\"', all_varchar=true, "
                f"strict_mode=true, null_padding=false)"
            )
        if self.fmt == "jsonl":
            return f"read_ndjson_objects({p})"
        return f"read_parquet({p})"

    def _columns(self, source_sql: str) -> list[str]:
        if self.fmt == "jsonl":
            return []  # JSONL fields are checked per row
        return [r[0] for r in self.con.execute(f"DESCRIBE SELECT * FROM {source_sql}").fetchall()]

    def _header_columns(self) -> list[str]:
        """CSV/TSV header read by Python (DuckDB's DESCRIBE needs auto-detection we turned off)."""
        delim = "," if self.fmt == "csv" else "\t"
        with _reading(self.path), _open_text(self.path) as f:
            reader = csv.reader(f, delimiter=delim, quotechar='"', doublequote=True, strict=False)
            try:
                header = next(reader)
            except StopIteration:
                raise InputFileError(f"{self.path}: the file is empty (no header row).") from None
        bad = [h for h in header if "\udcff" in h or any(0xDC80 <= ord(c) <= 0xDCFF for c in h)]
        if bad:
            raise InputFileError(f"{self.path}: the header row is not valid UTF-8.")
        return header

    def _prepare(self) -> None:
        """Check the file's columns before any row is read."""
        src = str(self.path)
        if self.path.suffix.lower() == ".gz":
            self._verify_gzip()
        if self.fmt in ("csv", "tsv"):
            header = self._header_columns()
            self._check_columns(header)
            cols = header
        elif self.fmt == "parquet":
            try:
                cols = self._columns(self._reader_sql(src))
            except duckdb.Error as exc:
                raise InputFileError(f"{self.path}: not a readable Parquet file ({_first_line(exc)}).") from None
            self._check_columns(cols)
            types = {r[0]: r[1] for r in self.con.execute(f"DESCRIBE SELECT * FROM {self._reader_sql(src)}").fetchall()}
            for flag, col, ok in (
                ("--text-col", self.text_col, ("VARCHAR",)),
                (
                    "--id-col",
                    self.id_col,
                    ("VARCHAR", "BIGINT", "INTEGER", "UBIGINT", "UINTEGER", "SMALLINT", "HUGEINT"),
                ),
                ("--split-col", self.split_col, ("VARCHAR",)),
            ):
                if col is not None and types.get(col) not in ok:
                    raise ValidationError(
                        str(self.path),
                        [
                            RowProblem(
                                None, col, f"has type {types.get(col)}, not {' or '.join(ok[:2])} (asked for by {flag})"
                            )
                        ],
                    )
        else:
            cols = None
        self.all_columns = cols

    def _verify_gzip(self) -> None:
        """Read the whole .gz once: DuckDB's reader accepts a wrong CRC or length, which mean the data is
        damaged; Python's gzip checks both at the end of each member. Its size is bounded while read."""
        check_gzip(self.path, self.cfg, shown=self.source_name or str(self.path))

    def _stage(self) -> None:
        src = str(self.path)
        try:
            self._create_stage(src, row_from_file=False)
        except duckdb.Error as exc:
            if self.fmt == "parquet":
                raise InputFileError(f"{self.path}: cannot read Parquet ({_first_line(exc)}).") from None
            # Find the offending row and column ourselves: DuckDB's line numbers count physical lines.
            problems, clean = self._diagnose_text_file()
            if not problems:
                raise InputFileError(f"{self.path}: cannot be read ({_first_line(exc)}).") from None
            # Go on with the rows that can be read, so the report lists every problem at once.
            self.structural_rejects = [(p.row, p.column, p.reason, raw) for p, raw in zip(problems, self._raw_rejects)]
            self._create_stage(clean, row_from_file=True)

    def _check_columns(self, cols: list[str]) -> None:
        seen: dict[str, int] = {}
        for i, c in enumerate(cols, 1):
            if c in seen:  # a reader would rename or drop one of them without a word
                raise ValidationError(
                    str(self.path),
                    [
                        RowProblem(
                            None, c, f"the header has this column twice (columns {seen[c]} and {i}); rename one of them"
                        )
                    ],
                )
            seen[c] = i
        wanted = [
            ("--text-col", self.text_col),
            ("--id-col", self.id_col),
            ("--label-col", self.label_col),
            ("--split-col", self.split_col),
            *(("--meta-cols", m) for m in (self.meta_cols or [])),
        ]
        missing = [(flag, c) for flag, c in wanted if c is not None and c not in cols]
        if missing:
            flag, col = missing[0]
            raise ValidationError(
                str(self.path),
                [RowProblem(None, col, f"column is missing (asked for by {flag}; the file has: {', '.join(cols)})")],
            )

    def _field_sql(self, name: str | None) -> str:
        if name is None:
            return "NULL::VARCHAR"
        if self.fmt == "jsonl":
            return f"(j ->> '{name.replace(chr(39), chr(39) * 2)}')"
        return f"CAST({_q(name)} AS VARCHAR)"

    def _label_sql(self) -> str:
        """Labels as a sorted list of trimmed strings (sorted lists: equal lists mean agreement)."""
        if self.label_col is None:
            return "NULL::VARCHAR[]"
        if self.fmt != "jsonl" and not self.cfg.multi_label:
            v = self._field_sql(self.label_col)
            return f"CASE WHEN {v} IS NULL OR trim({v}) = '' THEN NULL ELSE [trim({v})] END"
        return f"list_sort(list_transform({self._raw_label_sql()}, lambda x: trim(x)))"

    def _raw_label_sql(self) -> str:
        if self.label_col is None:
            return "NULL::VARCHAR[]"
        if self.fmt == "jsonl":
            key = self.label_col.replace("'", "''")
            raw = f"(j -> '{key}')"
            return (
                f"CASE WHEN json_type({raw}) = 'ARRAY' THEN from_json({raw}, '[\"VARCHAR\"]') "
                f"WHEN {raw} IS NULL OR json_type({raw}) = 'NULL' OR trim(j ->> '{key}') = '' THEN NULL "
                f"ELSE string_split(j ->> '{key}', '{self._sep_sql()}') END"
            )
        v = self._field_sql(self.label_col)
        return f"CASE WHEN {v} IS NULL OR trim({v}) = '' THEN NULL ELSE string_split({v}, '{self._sep_sql()}') END"

    def _split_sql(self) -> str:
        if self.split_col is None:
            return "'pool'"
        raw = self._field_sql(self.split_col)
        return (
            "CASE lower(trim(coalesce("
            + raw
            + ", ''))) "
            + " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in SPLIT_VALUES.items())
            + " END"
        )

    def _json_type_sql(self, name: str | None) -> str:
        """JSONL: the JSON type of a field (VARCHAR for a string, OBJECT, ARRAY, BIGINT, ...), checked in
        _validate so that an object given as text is refused instead of stored as its JSON."""
        if self.fmt != "jsonl" or name is None:
            return "NULL::VARCHAR"
        return f"json_type(j -> '{name.replace(chr(39), chr(39) * 2)}')"

    def _sep_sql(self) -> str:
        return self.label_sep.replace("'", "''")

    def _meta_sql(self) -> str:
        if self.fmt == "jsonl":
            used = {c for c in (self.text_col, self.id_col, self.label_col, self.split_col) if c}
            if self.meta_cols is not None:
                if not self.meta_cols:
                    return "NULL::VARCHAR"
                parts = ", ".join(f"{_q(m)} := (j -> '{m.replace(chr(39), chr(39) * 2)}')" for m in self.meta_cols)
                return f"to_json(struct_pack({parts}))::VARCHAR"
            # every field that is not id/text/label/split
            keys = "[" + ", ".join("'" + u.replace("'", "''") + "'" for u in sorted(used | {ROW_COL})) + "]"
            return self._jsonl_meta_all(keys)
        cols = self.meta_cols
        if cols is None:
            used = {self.text_col, self.id_col, self.label_col, self.split_col, ROW_COL}
            cols = [c for c in (self.all_columns or []) if c not in used]
        if not cols:
            return "NULL::VARCHAR"
        parts = ", ".join(f"{_q(c)} := CAST({_q(c)} AS VARCHAR)" for c in cols)
        return f"to_json(struct_pack({parts}))::VARCHAR"

    def _jsonl_meta_all(self, keys_sql: str) -> str:
        # json_keys lists the object's keys; keep the ones that are not id/text/label/split.
        return (
            f"CASE WHEN len(list_filter(json_keys(j), lambda k: NOT list_contains({keys_sql}, k))) = 0 THEN NULL "
            f"ELSE to_json(map_from_entries(list_transform(list_filter(json_keys(j), lambda k: NOT list_contains({keys_sql}, k)), "
            f"lambda k: {{'k': k, 'v': j -> ('$.\"' || k || '\"')}})))::VARCHAR END"
        )

    def _create_stage(self, src: str, *, row_from_file: bool) -> None:
        """Read the file once into a temporary table; ``ll_stage`` is a view that numbers its rows.

        Rows are numbered by the temporary table's rowid: with insertion order preserved it follows
        the file (a row_number() window over a million rows cost more than the read itself)."""
        self._drop_stage()
        self.con.execute("SET preserve_insertion_order = true")
        self.con.execute("CREATE TEMP TABLE ll_raw AS " + self._select_sql(src, row_from_file=row_from_file))
        row_sql = "_file_row" if row_from_file else "(rowid + 1)"
        if self.id_col:
            # ids are stored in Unicode NFC: "é" typed as one character or as e + accent is one id
            id_sql = "nfc_normalize(id)"
        else:
            # Without an id column the id is the file name and row: importing the same file twice is caught.
            id_sql = "'" + self.path.name.replace("'", "''") + ":' || " + row_sql + "::VARCHAR"
        self.con.execute(f"""CREATE TEMP VIEW ll_stage AS
            SELECT {row_sql} AS _row, {id_sql} AS id, id AS id_raw, text, labels, split_raw, split, metadata,
                   text_type, id_type, label_type, split_type FROM ll_raw""")

    def _drop_stage(self) -> None:
        self.con.execute("DROP VIEW IF EXISTS ll_stage")
        self.con.execute("DROP TABLE IF EXISTS ll_raw")

    def _select_sql(self, src: str, *, row_from_file: bool) -> str:
        reader = self._reader_sql(src)
        if self.fmt == "jsonl":
            reader = f"{reader} AS t(j)"
        file_row = ""
        if row_from_file:
            file_row = (
                f"CAST({_q(ROW_COL)} AS BIGINT)" if self.fmt != "jsonl" else "CAST(j ->> '" + ROW_COL + "' AS BIGINT)"
            ) + " AS _file_row,"
        return f"""
            SELECT {file_row}
                   {self._field_sql(self.id_col) if self.id_col else "NULL::VARCHAR"} AS id,
                   {self._field_sql(self.text_col)} AS text,
                   {self._label_sql()} AS labels,
                   {self._field_sql(self.split_col)} AS split_raw,
                   {self._split_sql()} AS split,
                   {self._meta_sql()} AS metadata,
                   {self._json_type_sql(self.text_col)} AS text_type,
                   {self._json_type_sql(self.id_col)} AS id_type,
                   {self._json_type_sql(self.label_col)} AS label_type,
                   {self._json_type_sql(self.split_col)} AS split_type
            FROM {reader}"""

    # -- diagnosing unreadable text files ------------------------------------
    def _diagnose_text_file(self) -> tuple[list[RowProblem], str]:
        """Python pass over a CSV/TSV/JSONL file that DuckDB refused: find every bad row and
        write the good ones (with their row numbers) to a clean temporary file."""
        problems: list[RowProblem] = []
        self._raw_rejects: list[str] = []
        fd, clean = tempfile.mkstemp(suffix=".jsonl" if self.fmt == "jsonl" else ".csv", prefix="labelloop-clean-")
        os.close(fd)
        self._tmpfiles.append(clean)
        with _reading(self.path), _open_text(self.path) as f, open(clean, "w", encoding="utf-8", newline="") as out:
            if self.fmt == "jsonl":
                row = 0
                for line in f:
                    if not line.strip():
                        continue
                    row += 1
                    bad_utf8 = _has_surrogates(line)
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as exc:
                        problems.append(RowProblem(row, None, f"not valid JSON ({exc.msg} at character {exc.pos + 1})"))
                        self._raw_rejects.append(_printable(line))
                        continue
                    except RecursionError:
                        problems.append(RowProblem(row, None, "JSON nested too deeply to read"))
                        self._raw_rejects.append(_printable(line[:1000]))
                        continue
                    if not isinstance(obj, dict):
                        problems.append(RowProblem(row, None, "a JSON line must be an object"))
                        self._raw_rejects.append(_printable(line))
                        continue
                    if bad_utf8:
                        col = next((k for k, v in obj.items() if isinstance(v, str) and _has_surrogates(v)), None)
                        problems.append(RowProblem(row, col, "invalid UTF-8 bytes"))
                        self._raw_rejects.append(_printable(line))
                        continue
                    obj[ROW_COL] = row
                    out.write(json.dumps(obj, ensure_ascii=False) + "\n")
            else:
                delim = "," if self.fmt == "csv" else "\t"
                reader = csv.reader(f, delimiter=delim, quotechar='"', doublequote=True, strict=True)
                writer = csv.writer(out, delimiter=delim, quotechar='"', doublequote=True, lineterminator="\n")
                header = next(reader)
                writer.writerow([ROW_COL, *header])
                row = 0
                while True:
                    try:
                        rec = next(reader)
                    except StopIteration:
                        break
                    except csv.Error as exc:
                        row += 1
                        problems.append(RowProblem(row, None, f"malformed {self.fmt.upper()} ({exc})"))
                        self._raw_rejects.append("")
                        continue
                    row += 1
                    if len(rec) != len(header):
                        problems.append(RowProblem(row, None, f"has {len(rec)} fields, the header has {len(header)}"))
                        self._raw_rejects.append(_printable(delim.join(rec)))
                        continue
                    bad = [h for h, v in zip(header, rec) if _has_surrogates(v)]
                    if bad:
                        problems.append(RowProblem(row, bad[0], "invalid UTF-8 bytes"))
                        self._raw_rejects.append(_printable(delim.join(rec)))
                        continue
                    writer.writerow([row, *rec])
        return problems, clean

    # -- validation ----------------------------------------------------------
    def _check(self, sql: str, column: str | None, reason_sql: str) -> None:
        """Record every row that ``sql`` returns (it selects ``_row`` and what ``reason_sql`` uses)."""
        col = "NULL" if column is None else "'" + column.replace("'", "''") + "'"
        self.con.execute(f"INSERT INTO ll_rejected SELECT _row, {col}, {reason_sql} FROM ({sql})")

    def _validate(self) -> None:
        """Every row rule of an import, as set-based SQL over the staged rows, each rejected row named with
        its column and reason.

        Long because the rules stand in the order a user reads the rejects file: text, id, label, split.
        """
        t, i, lab, sp = self.text_col, self.id_col or "(row id)", self.label_col, self.split_col
        max_chars = self.cfg.max_text_chars
        self.con.execute("CREATE OR REPLACE TEMP TABLE ll_rejected (_row BIGINT, col VARCHAR, reason VARCHAR)")
        # A CSV reader gives NULL for an empty cell; in JSONL and Parquet NULL means the field is absent.
        null_reason = "'text is empty or only whitespace'" if self.fmt in ("csv", "tsv") else "'text is missing'"
        self._check("SELECT _row FROM ll_stage WHERE text IS NULL", t, null_reason)
        if self.fmt == "jsonl":
            self._check(
                "SELECT _row, text_type FROM ll_stage WHERE text_type NOT IN ('VARCHAR', 'NULL')",
                t,
                "'text must be a JSON string, got ' || text_type",
            )
            self._check(
                "SELECT _row, id_type FROM ll_stage WHERE id_type NOT IN ('VARCHAR', 'BIGINT', 'UBIGINT', 'NULL')",
                i,
                "'id must be a JSON string or whole number, got ' || id_type",
            )
            if lab:
                self._check(
                    """SELECT _row, label_type FROM ll_stage
                               WHERE label_type NOT IN ('VARCHAR', 'BIGINT', 'UBIGINT', 'ARRAY', 'NULL')""",
                    lab,
                    "'label must be a JSON string or a list of strings, got ' || label_type",
                )
            if sp:
                self._check(
                    "SELECT _row, split_type FROM ll_stage WHERE split_type NOT IN ('VARCHAR', 'NULL')",
                    sp,
                    "'split must be a JSON string, got ' || split_type",
                )
        self._check(
            r"SELECT _row FROM ll_stage WHERE text IS NOT NULL AND NOT regexp_matches(text, '[^\s\p{Z}]')",
            t,
            "'text is empty or only whitespace'",
        )
        self._check(
            f"SELECT _row, length(text) AS n FROM ll_stage WHERE length(text) > {max_chars}",
            t,
            f"'text has ' || n::VARCHAR || ' characters, over the project limit of {max_chars} ([project] max_text_chars)'",
        )
        self._check("SELECT _row FROM ll_stage WHERE id IS NULL OR trim(id) = ''", i, "'id is empty'")
        # Group first (cheap); the window that finds the first occurrence runs only on repeated ids.
        self._check(
            """SELECT _row, id, id_raw, first_row, first_raw FROM (
                SELECT _row, id, id_raw, min(_row) OVER (PARTITION BY id) AS first_row,
                       arg_min(id_raw, _row) OVER (PARTITION BY id) AS first_raw FROM ll_stage
                WHERE id IN (SELECT id FROM ll_stage WHERE id IS NOT NULL GROUP BY id HAVING count(*) > 1))
            WHERE _row <> first_row""",
            i,
            "CASE WHEN id_raw IS DISTINCT FROM first_raw "
            "THEN 'id ''' || id || ''' is the id of row ' || first_row::VARCHAR "
            "|| ' written in another Unicode form (the same once both are normalised to NFC)' "
            "ELSE 'id ''' || id || ''' repeats row ' || first_row::VARCHAR END",
        )
        self._check(
            f"SELECT s._row, s.id FROM ll_stage s JOIN items it ON it.id = s.id AND it.import_id <> {self.import_id}",
            i,
            "'id ''' || id || ''' is already in the project'",
        )
        if lab:
            allowed = "[" + ", ".join("'" + x.replace("'", "''") + "'" for x in self.cfg.labels) + "]"
            names = ", ".join(self.cfg.labels).replace("'", "''")
            sep = self._sep_sql()
            self._check(
                f"""SELECT _row, labels FROM ll_stage WHERE labels IS NOT NULL
                AND len(list_filter(labels, lambda x: NOT list_contains({allowed}, x))) > 0""",
                lab,
                f"'label ''' || array_to_string(labels, '{sep}') || ''' is not one of the project''s labels ({names})'",
            )
            if not self.cfg.multi_label:
                self._check(
                    "SELECT _row FROM ll_stage WHERE len(labels) > 1",
                    lab,
                    "'has more than one label in a single-label project'",
                )
        if sp:
            self._check(
                "SELECT _row, split_raw FROM ll_stage WHERE split IS NULL",
                sp,
                "'split ''' || split_raw || ''' is not one of pool, train, test, gold'",
            )
        for row, col, reason, _raw in self.structural_rejects:
            self.con.execute("INSERT INTO ll_rejected VALUES (?, ?, ?)", [row, col, reason])
        self.problem_total = self.con.execute("SELECT count(*) FROM ll_rejected").fetchone()[0]
        self.problems = [
            RowProblem(r, c, reason)
            for r, c, reason in self.con.execute(
                f"SELECT _row, col, reason FROM ll_rejected ORDER BY _row, col LIMIT {MAX_REPORTED}"
            ).fetchall()
        ]

    # -- writing -------------------------------------------------------------
    def run(self) -> ImportReport:
        started = time.perf_counter()
        if not self.path.exists():
            raise InputFileError(f"{self.path} does not exist.")
        if not self.path.is_file():
            raise InputFileError(f"{self.path} is not a file.")
        self._prepare()
        store = self.project.store
        self.import_id = store.scalar("SELECT coalesce(max(import_id), 0) + 1 FROM imports")
        self.now = utcnow()
        self.src_name = self.source_name or str(self.path.resolve())
        try:
            report = self._careful_path()
        finally:
            try:
                self._drop_stage()
                for name in ("ll_rejected", "ll_valid", "ll_dup", "ll_kept"):
                    store.con.execute(f"DROP TABLE IF EXISTS {name}")
            except duckdb.Error:
                pass
            for tmp in self._tmpfiles:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
        store.invalidate_caches()
        report.seconds = time.perf_counter() - started
        return report

    def _careful_path(self) -> ImportReport:
        """Stage into a temporary table (diagnosing unreadable rows in Python), validate, then write.

        (Inserting straight from the reader into ``items`` and validating there was measured slower:
        the row-numbering window serialises the persistent insert.)"""
        self._stage()
        store = self.project.store
        with store.transaction() as con:
            self._validate()
            rows_read = con.execute("SELECT count(*) FROM ll_stage").fetchone()[0] + len(self.structural_rejects)
            if self.problem_total and not self.skip_invalid:
                raise ValidationError(str(self.path), self.problems, self.problem_total)
            if self.problem_total:
                con.execute("""CREATE OR REPLACE TEMP TABLE ll_valid AS
                    SELECT * FROM ll_stage s WHERE NOT EXISTS (SELECT 1 FROM ll_rejected r WHERE r._row = s._row)""")
                valid = "ll_valid"
            else:
                valid = "ll_stage"
            duplicates = self._duplicates(con, valid)
            deduped = 0
            if self.dedupe and duplicates["drop"]:
                con.execute(f"""CREATE OR REPLACE TEMP TABLE ll_kept AS
                    SELECT * FROM {valid} v ANTI JOIN (SELECT _row FROM ll_dup WHERE drop_row) d USING (_row)""")
                deduped, valid = duplicates["drop"], "ll_kept"
            report = self._finish(con, valid, rows_read=rows_read - deduped, deduped=deduped)
            report.duplicates = {k: v for k, v in duplicates.items() if k != "drop"}
            if self.id_col:
                n = con.execute(f"SELECT count(*) FROM {valid} WHERE id IS DISTINCT FROM id_raw").fetchone()[0]
                if n:
                    report.duplicates["ids_nfc"] = int(n)
            report.deduped = deduped
            report.rows_read += deduped
            return report

    def _duplicates(self, con, valid: str) -> dict[str, int]:
        """Exact duplicate texts (64-bit hash of the text): rows repeating an earlier row of this file,
        rows repeating an item already in the project, and pool rows whose text is a test or gold item's
        (in the file or the project: leakage). ``drop`` counts what --dedupe removes: every copy after
        the first (a test or gold copy is kept over a pool copy), and rows already in the project."""
        con.execute(f"""CREATE OR REPLACE TEMP TABLE ll_dup AS
            WITH v AS (SELECT _row, split, hash(text) AS h FROM {valid}),
            rep AS (SELECT h FROM v GROUP BY h HAVING count(*) > 1),
            ranked AS (
                -- only texts that repeat in the file are ranked: test/gold copies first, then file order
                SELECT _row, row_number() OVER (PARTITION BY h ORDER BY split = 'pool', _row) AS k,
                       bool_or(split <> 'pool') OVER (PARTITION BY h) AS file_eval
                FROM v SEMI JOIN rep USING (h)),
            proj AS (
                SELECT hash(text) AS h, bool_or(split = 'pool') AS in_pool, bool_or(split <> 'pool') AS in_eval
                FROM items WHERE import_id <> {int(self.import_id)} GROUP BY 1)
            SELECT v._row, v.split,
                   coalesce(r.k > 1, false) AS repeat_in_file,
                   p.h IS NOT NULL AS in_project,
                   v.split = 'pool' AND (coalesce(p.in_eval, false) OR coalesce(r.file_eval, false)) AS pool_leak,
                   v.split <> 'pool' AND coalesce(p.in_pool, false) AS eval_leak,
                   coalesce(r.k > 1, false) OR p.h IS NOT NULL AS drop_row
            FROM v LEFT JOIN ranked r USING (_row) LEFT JOIN proj p USING (h)""")
        in_file, in_project, pool_leak, eval_leak, drop = con.execute("""
            SELECT count(*) FILTER (WHERE repeat_in_file), count(*) FILTER (WHERE in_project),
                   count(*) FILTER (WHERE pool_leak), count(*) FILTER (WHERE eval_leak), count(*) FILTER (WHERE drop_row)
            FROM ll_dup""").fetchone()
        return {
            "in_file": int(in_file),
            "in_project": int(in_project),
            "pool_vs_eval": int(pool_leak + eval_leak),
            "drop": int(drop),
        }

    def _finish(self, con, valid: str, *, rows_read: int, deduped: int = 0) -> ImportReport:
        base_ord = con.execute("SELECT coalesce(max(ord), 0) FROM items").fetchone()[0]
        # ord and event ids come from the row number: unique and increasing (gaps where rows were
        # rejected are harmless); no sort is needed and the physical order of the inserts does not
        # matter, so DuckDB inserts from both threads.
        con.execute("SET preserve_insertion_order = false")
        try:
            self._insert_rows(con, valid, base_ord)
        finally:
            con.execute("RESET preserve_insertion_order")
        imported, labelled = con.execute(f"""SELECT count(*), count(labels) FILTER (WHERE split <> 'pool' OR
                                                {str(self.prelabel_pool).lower()}) FROM {valid}""").fetchone()
        splits = dict(con.execute(f"SELECT split, count(*) FROM {valid} GROUP BY 1 ORDER BY 1").fetchall())
        rejected = rows_read - imported
        con.execute(
            """INSERT INTO imports (import_id, source_file, format, rows_read, rows_imported, rows_rejected,
                                            labelled, imported_at, actor, rows_deduped) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [
                self.import_id,
                self.src_name,
                self.fmt,
                rows_read + deduped,
                imported,
                rejected,
                labelled,
                self.now,
                self.actor,
                deduped,
            ],
        )
        rejects_file = self._write_rejects() if rejected and self.problem_total else None
        fault_point("import-before-commit")
        return ImportReport(
            self.source_name or str(self.path), self.fmt, rows_read, imported, rejected, labelled, splits, rejects_file
        )

    def _insert_rows(self, con, valid: str, base_ord: int) -> None:
        # Pool rows that arrive with labels are pre-labelled: each gets an import event whose actor names
        # the file. The event is stored on the item row (import_event is its id; its labels, actor and
        # time are the row's source_labels and the import's), and the `events` view lists it with the
        # others. Test and gold labels stay on the item (gold_label) and never enter the loop.
        first_event = con.execute("SELECT coalesce(max(event_id), 0) FROM events").fetchone()[0]
        con.execute(
            f"""
            INSERT INTO items (id, ord, text, metadata, split, source_labels, source_file, source_row, import_id,
                               imported_at, import_event)
            SELECT id, ? + _row, text, metadata, split, {"labels" if self.prelabel_pool else "CASE WHEN split <> 'pool' THEN labels END"},
                   ?, _row, ?, ?,
                   CASE WHEN split = 'pool' AND labels IS NOT NULL AND {str(self.prelabel_pool).lower()} THEN ? + _row END
            FROM {valid}""",
            [base_ord, self.src_name, self.import_id, self.now, first_event],
        )

    def _write_rejects(self) -> str:
        """The rejected rows with their reasons, as CSV (written safely: a fresh temporary file, renamed).
        Ids, texts and reasons are data: their control characters are made visible, so printing the
        file in a terminal cannot run escape sequences. Failing to write it imports nothing."""
        out = self.rejects_path or self.path.with_name(self.path.name + ".rejected.csv")
        rows = self.con.execute("""
            SELECT r._row, r.col, r.reason, s.id, s.text FROM ll_rejected r LEFT JOIN ll_stage s USING (_row)
            ORDER BY r._row, r.col""").fetchall()
        raw = {row: text for row, _c, _r, text in self.structural_rejects}
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["row", "column", "reason", "id", "text"])
        for row, col, reason, id_, text in rows:
            w.writerow(
                [
                    row,
                    clean(col or ""),
                    clean(reason),
                    clean(id_ or ""),
                    clean(text if text is not None else raw.get(row, "")),
                ]
            )
        try:
            atomic_write_text(out, buf.getvalue())
        except OSError as exc:
            raise InputFileError(
                f"{out}: cannot write the rejected rows there ({exc.strerror or exc}); nothing was "
                "imported. Pass --rejects PATH to write them to a folder you can write."
            ) from None
        return str(out)


def check_gzip(path: Path, cfg, *, shown: str | None = None) -> int:
    """Decompress ``path`` once, counting: its data must be intact (CRC and length) and at most
    ``[project] max_gzip_ratio`` times its compressed size and ``max_import_mib`` in all, checked while
    streaming (a small file that expands to gigabytes is refused after reading the allowed amount,
    holding at most one chunk in memory). Returns the decompressed size."""
    import gzip

    compressed = max(path.stat().st_size, 1)
    cap = min(cfg.max_import_mib * 2**20, max(cfg.max_gzip_ratio * compressed, 2**20))
    total = 0
    with _reading(path), gzip.open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            total += len(chunk)
            if total > cap:
                raise InputFileError(
                    f"{shown or path}: the gzip data expands to more than {cap / 2**20:,.0f} MiB "
                    f"({total // compressed:,}x its compressed size and counting); the project takes at most "
                    f"{cfg.max_gzip_ratio}x and {cfg.max_import_mib:,} MiB ([project] max_gzip_ratio, "
                    "max_import_mib); nothing was imported."
                )
    return total


def _open_text(path: Path):
    # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8") is dropped, not read as part of the first column
    if path.suffix.lower() == ".gz":
        import gzip

        return gzip.open(path, "rt", encoding="utf-8-sig", errors="surrogateescape", newline="")
    return open(path, "r", encoding="utf-8-sig", errors="surrogateescape", newline="")


class _reading:
    """Turn the ways a compressed or unreadable file fails while read into one InputFileError."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        import gzip
        import zlib

        if exc is None or isinstance(exc, (InputFileError, ValidationError)):
            return False
        if isinstance(exc, gzip.BadGzipFile):
            raise InputFileError(
                f"{self.path}: not gzip data, although the name ends in .gz ({exc}); nothing was imported."
            ) from None
        if isinstance(exc, (EOFError, zlib.error)):
            raise InputFileError(
                f"{self.path}: the gzip data is damaged or truncated ({exc}); nothing was imported."
            ) from None
        if isinstance(exc, OSError):
            raise InputFileError(f"{self.path} cannot be read ({exc.strerror or exc}); nothing was imported.") from None
        return False


def _has_surrogates(s: str) -> bool:
    return any(0xDC80 <= ord(c) <= 0xDCFF for c in s)


def _printable(s: str) -> str:
    return s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0]


def import_file(
    project: Project,
    path: Path | str,
    *,
    text_col: str = "text",
    id_col: str | None = None,
    label_col: str | None = None,
    split_col: str | None = None,
    meta_cols: list[str] | None = None,
    skip_invalid: bool = False,
    fmt: str | None = None,
    actor: str | None = None,
    label_sep: str = "|",
    dedupe: bool = False,
    rejects_path: Path | str | None = None,
    prelabel_pool: bool = True,
    source_name: str | None = None,
) -> ImportReport:
    """Import one file into the project. Raises ValidationError (nothing imported) on bad rows.

    ``dedupe``: drop exact duplicate texts (see ``_Importer._duplicates``). ``prelabel_pool=False``:
    labels of pool rows are ignored (only test and gold rows keep theirs). ``source_name``: what
    ``source_file`` records (default: the file's absolute path)."""
    return _Importer(
        project,
        Path(path),
        text_col=text_col,
        id_col=id_col,
        label_col=label_col,
        split_col=split_col,
        meta_cols=meta_cols,
        skip_invalid=skip_invalid,
        fmt=fmt,
        actor=actor,
        label_sep=label_sep,
        dedupe=dedupe,
        rejects_path=rejects_path,
        prelabel_pool=prelabel_pool,
        source_name=source_name,
    ).run()
