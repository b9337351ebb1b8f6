"""Trusting the loop (issue 8): project files cannot run code, data reaches the terminal as text,
files are written safely, bad input gets one sentence and exit code 2, duplicates are reported,
corrections are counted, and the demo teaches the right lesson. Each test reads back what was
stored or the bytes written."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from labelloop.core.config import CONFIG_NAME
from labelloop.core.loop.al_round import queued_items, train_and_queue
from labelloop.core.store.imports import import_file
from labelloop.core.store.project import Project, init_project
from tests.conftest import ROOT, run_cli, write_csv, write_jsonl
from tests.tui_helpers import TRUTH, build_project, project_copy

ESC_BYTES = (b"\x1b", b"\x07", b"\xc2\x9b", b"\xe2\x80\xae")  # ESC, BEL, 8-bit CSI, RTL override


def cli_bytes(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "labelloop.tui.cli", *args], capture_output=True, cwd=ROOT, env=env, timeout=300
    )


def assert_no_raw_controls(data: bytes) -> None:
    for seq in ESC_BYTES:
        assert seq not in data, f"raw control {seq!r} reached the terminal"


def trained(tmp_path, key="default"):
    return project_copy(tmp_path, key)


# --- 4. no pickle from the project folder ----------------------------------------------------------


class _Evil:
    """Unpickling this creates the marker file: if the marker exists, project data ran code."""

    marker = ""

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _evil_pickle(marker: Path) -> bytes:
    _Evil.marker = str(marker)
    return pickle.dumps(_Evil())


def _plant_everywhere(d: Path, marker: Path) -> None:
    """A malicious pickle in every place labelloop has ever read a pickle from, old names and new."""
    evil = _evil_pickle(marker)
    for rel in ("cache/featurizer.pkl", "models/model_v1.pkl", "models/model_v2.pkl"):
        (d / rel).write_bytes(evil)
    obj = np.array([_Evil()], dtype=object)
    for rel in ("cache/feature_ids.npy", "models/stopset_v1.npy", "cache/feature_splits.npy"):
        with open(d / rel, "wb") as f:
            np.save(f, obj, allow_pickle=True)
    # the new safe names too: an .npz whose member is a pickled object array
    for rel in ("cache/featurizer.npz", "models/model_v1.npz"):
        with open(d / rel, "wb") as f:
            np.savez(f, __meta__=np.frombuffer(b'{"format": "labelloop-artifact"}', dtype=np.uint8), coef=obj)
    with open(d / "cache/feature_ords.npy", "wb") as f:
        np.save(f, obj, allow_pickle=True)


def test_planted_pickles_never_run(tmp_path):
    d = trained(tmp_path)
    marker = tmp_path / "PWNED"
    _plant_everywhere(d, marker)
    # train (CLI): the damaged cache is rebuilt with a note; the planted model v1 file is not loaded
    r = run_cli("train", str(d), "--seed", "1")
    assert r.returncode == 0, r.stderr
    assert "feature cache" in r.stdout and "rebuilt" in r.stdout
    assert not marker.exists()
    # a retrain in the workstation and the metrics pane (Workspace API, same code paths)
    _plant_everywhere(d, marker)
    from labelloop.core.api.workspace import Workspace
    from labelloop.core.loop.metrics import arm_comparison, metrics_snapshot

    ws = Workspace(d, actor="alice")
    try:
        ws.retrain(seed=2)
        metrics_snapshot(ws.project)
        arm_comparison(ws.project)
    finally:
        ws.close()
    assert not marker.exists()
    # model export of a version whose file was replaced by a pickle: a clear refusal, nothing runs
    _plant_everywhere(d, marker)
    r = run_cli("model", "export", str(d), str(tmp_path / "m.npz"), "--version", "1")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "damaged or not a labelloop" in r.stderr or "not a labelloop" in r.stderr
    assert not marker.exists()
    # model import of a pickle is refused without --trust
    (tmp_path / "bundle.pkl").write_bytes(_evil_pickle(marker))
    r = run_cli("model", "import", str(d), str(tmp_path / "bundle.pkl"))
    assert r.returncode == 2 and "--trust" in r.stderr and not marker.exists()


def test_models_and_cache_are_stored_without_pickle(tmp_path):
    d = trained(tmp_path)
    files = [p for p in d.rglob("*") if p.is_file() and p.suffix in (".npz", ".npy")]
    assert files and not list(d.rglob("*.pkl"))
    for p in files:  # every array file loads with allow_pickle=False
        with open(p, "rb") as f:
            z = np.load(f, allow_pickle=False)
            if hasattr(z, "files"):
                for k in z.files:
                    assert z[k].dtype.kind in "biufS", (p, k)  # numbers (and scipy's format tag), never objects
    with Project.open(d) as p:
        from labelloop.core.loop.al_round import load_model

        art = load_model(p, 1)
        X = np.zeros((1, art["featurizer"].n_features_), dtype=np.float32)
        assert art["model"].predict_proba(X).shape == (1, 2)


def test_exported_model_round_trips_and_crafted_bundles_are_refused(tmp_path):
    d = trained(tmp_path)
    out = tmp_path / "m.npz"
    assert run_cli("model", "export", str(d), str(out)).returncode == 0
    other = build_project(tmp_path / "other", n_pool=120, n_test=30, trained=False)
    r = run_cli("model", "import", str(other), str(out))
    assert r.returncode == 0, r.stderr
    with Project.open(d) as p1, Project.open(other) as p2:
        from labelloop.core.loop.al_round import load_model

        a, b = load_model(p1, 1), load_model(p2, 2 if p2.store.scalar("SELECT max(version) FROM models") == 2 else 1)
        texts = ["WIN a free prize now", "see you at lunch"]
        Xa, Xb = a["featurizer"].transform(texts), b["featurizer"].transform(texts)
        assert np.allclose(a["model"].predict_proba(Xa), b["model"].predict_proba(Xb))
    # crafted: right format, wrong shapes; truncated; random bytes; an npz with an object member
    meta, arrays = _bundle(out)
    arrays["model_coef"] = arrays["model_coef"][:, :5]
    _write_bundle(tmp_path / "shapes.npz", meta, arrays)
    (tmp_path / "trunc.npz").write_bytes(out.read_bytes()[:2000])
    (tmp_path / "noise.npz").write_bytes(os.urandom(4096))
    meta2 = dict(meta, model={**meta["model"], "temperature": -1})
    _write_bundle(tmp_path / "temp.npz", meta2, _bundle(out)[1])
    for name in ("shapes.npz", "trunc.npz", "noise.npz", "temp.npz"):
        r = run_cli("model", "import", str(other), str(tmp_path / name))
        assert r.returncode == 2 and "Traceback" not in r.stderr and "unexpected" not in r.stderr, (name, r.stderr)


def _bundle(path):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays.pop("__meta__").tobytes())
    return meta, arrays


def _write_bundle(path, meta, arrays):
    with open(path, "wb") as f:
        np.savez(f, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)


def test_old_pickle_model_rows_are_refused_with_a_sentence(tmp_path):
    d = trained(tmp_path)
    with Project.open(d) as p:  # a project written by an older labelloop points at a .pkl
        p.store.con.execute("UPDATE models SET artifact = 'model_v1.pkl' WHERE version = 1")
    (d / "models" / "model_v1.pkl").write_bytes(_evil_pickle(tmp_path / "PWNED"))
    r = run_cli("model", "export", str(d), str(tmp_path / "m.npz"), "--version", "1")
    assert r.returncode == 2 and "older labelloop as a pickle" in r.stderr
    assert not (tmp_path / "PWNED").exists()


# --- 5. data and config reach the terminal as text ---------------------------------------------------

HOSTILE_ID = "id\x1b]52;c;SGVsbG8=\x07\x1b[2J\u202e"


def test_cli_prints_hostile_ids_labels_splits_and_errors_as_text(tmp_path):
    d = init_project(tmp_path / "p", ["x[/]", "b[@click=app.quit]"])  # label names with markup
    rows = [[HOSTILE_ID, "WIN a prize \x1b]0;PWNED\x07 now"], ["plain", "hello there friend"]]
    rows += [[f"r{i}", f"message number {i} about lunch"] for i in range(60)]
    f = write_csv(tmp_path / "in.csv", ["id", "text"], rows)
    r = cli_bytes("import", str(d), str(f), "--id-col", "id")
    assert r.returncode == 0
    r = cli_bytes("train", str(d), "--seed", "0")
    assert r.returncode == 0
    assert_no_raw_controls(r.stdout + r.stderr)
    for args in (
        ("next", str(d), "--n", "70"),
        ("status", str(d)),
        ("next", str(d), "--json"),
        ("status", str(d), "--json"),
    ):
        r = cli_bytes(*args)
        assert r.returncode == 0, r.stderr
        assert_no_raw_controls(r.stdout + r.stderr)
    out = cli_bytes("next", str(d), "--n", "70").stdout.decode()
    assert "\u241b]52;c;SGVsbG8=\u2407" in out  # shown, visibly: ␛]52;c;...␇
    data = json.loads(cli_bytes("next", str(d), "--json", "--n", "70").stdout)
    assert HOSTILE_ID in [it["item_id"] for it in data]  # --json keeps the exact data, escaped
    # an error message that quotes an id: a duplicate id in a second import
    f2 = write_csv(tmp_path / "dup.csv", ["id", "text", "split"], [[HOSTILE_ID, "again", "te\x1bst"]])
    r = cli_bytes("import", str(d), str(f2), "--id-col", "id", "--split-col", "split")
    assert r.returncode == 2 and b"already in the project" in r.stderr
    assert_no_raw_controls(r.stderr)
    # and the rejects file written by --skip-invalid
    r = cli_bytes("import", str(d), str(f2), "--id-col", "id", "--split-col", "split", "--skip-invalid")
    assert r.returncode == 0
    rejects = (tmp_path / "dup.csv.rejected.csv").read_bytes()
    assert_no_raw_controls(rejects) and b"\xe2\x90\x9b" in rejects


def test_sanitiser_makes_every_control_visible():
    from labelloop.core.util.textsafe import clean, safe_json, safe_line

    s = "a\x1b[2Jb\x07c\x9bd\u202ee\x00f\tg\nh\x7f"
    out = clean(s)
    assert not any(ord(c) < 0x20 and c not in "\n" or 0x7F <= ord(c) < 0xA0 or c == "\u202e" for c in out)
    assert "␛[2J" in out and "<U+009B>" in out and "<U+202E>" in out and "\n" in out
    assert "\n" not in safe_line(s) and len(safe_line("x" * 100, 10)) == 10
    j = safe_json({"k": s})
    assert json.loads(j) == {"k": s} and "\x9b" not in j and "\u202e" not in j and "\x1b" not in j


# --- 6. files are written safely ---------------------------------------------------------------------


def test_planted_symlinks_at_old_temporary_names_are_not_followed(tmp_path):
    d = trained(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    f = write_csv(tmp_path / "in.csv", ["id", "text"], [["n1", "fine"], ["n2", ""]])
    for name in ("in.csv.rejected.csv.tmp", ".m.npz.tmp", ".m.pkl.tmp", "in.csv.rejected.csv.tmp.csv"):
        (tmp_path / name).symlink_to(victim)
    for name in ("model_v3.pkl.tmp", "model_v3.npz.tmp", "stopset_v3.npy.tmp"):
        (d / "models" / name).symlink_to(victim)
    assert run_cli("import", str(d), str(f), "--id-col", "id", "--skip-invalid").returncode == 0
    assert run_cli("model", "export", str(d), str(tmp_path / "m.npz")).returncode == 0
    assert run_cli("train", str(d), "--seed", "3").returncode == 0
    assert victim.read_text() == "precious"
    # a symlink under the final name is replaced, not written through
    (tmp_path / "out.parquet").symlink_to(victim)
    assert run_cli("export", str(d), str(tmp_path / "out.parquet")).returncode == 0
    assert victim.read_text() == "precious" and not (tmp_path / "out.parquet").is_symlink()
    # and no temporary file is left anywhere
    assert not [p for p in tmp_path.rglob("*.tmp*") if not p.is_symlink()]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    import errno

    from labelloop.core.util.safeio import atomic_path, atomic_write

    target = tmp_path / "model_v1.npz"
    target.write_bytes(b"old")

    def disk_full(f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(target, disk_full)
    with pytest.raises(OSError):
        with atomic_path(target) as p:
            p.write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["model_v1.npz"]


def test_one_helper_writes_every_file():
    """No module renames files by hand: every os.replace lives in core/util/safeio.py."""
    offenders = []
    for path in list((ROOT / "core").glob("*.py")) + list((ROOT / "tui").glob("*.py")):
        if path.name == "safeio.py":
            continue
        text = path.read_text()
        if "os.replace(" in text or ".replace(tmp" in text or "tmp.replace(" in text or ".write_bytes(pickle" in text:
            offenders.append(path.name)
    assert offenders == []


# --- 8. every bad-input case: one sentence, exit code 2 --------------------------------------------


def _gz(path: Path, text: str) -> Path:
    path.write_bytes(gzip.compress(text.encode()))
    return path


@pytest.mark.parametrize("case", ["truncated", "crc", "not-gzip"])
def test_damaged_gzip_is_one_sentence(tmp_path, project_dir, case):
    good = gzip.compress(("id,text\n" + "".join(f"{i},message {i}\n" for i in range(2000))).encode())
    f = tmp_path / "in.csv.gz"
    if case == "truncated":
        f.write_bytes(good[: len(good) // 2])
    elif case == "crc":
        f.write_bytes(good[:-8] + bytes([good[-8] ^ 0xFF]) + good[-7:])
    else:
        f.write_text("id,text\n1,plain text\n")
    r = run_cli("import", str(project_dir), str(f), "--id-col", "id")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "unexpected" not in r.stderr, r.stderr
    assert "gzip" in r.stderr
    with Project.open(project_dir) as p:
        assert p.store.item_count() == 0


def test_rejects_file_that_cannot_be_written_imports_nothing(tmp_path, project_dir):
    f = write_csv(tmp_path / "in.csv", ["id", "text"], [["a", "fine"], ["b", ""]])
    (tmp_path / "in.csv.rejected.csv").mkdir()  # the rejects file's name is taken by a folder
    r = run_cli("import", str(project_dir), str(f), "--id-col", "id", "--skip-invalid")
    assert r.returncode == 2 and "cannot write the rejected rows" in r.stderr and "--rejects" in r.stderr
    with Project.open(project_dir) as p:
        assert p.store.item_count() == 0
    r = run_cli(
        "import",
        str(project_dir),
        str(f),
        "--id-col",
        "id",
        "--skip-invalid",
        "--rejects",
        str(tmp_path / "elsewhere.csv"),
    )
    assert r.returncode == 0 and (tmp_path / "elsewhere.csv").exists()


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("setpriv"),
    reason="needs root and setpriv to run as an unprivileged user",
)
def test_skip_invalid_with_a_read_only_input_folder(tmp_path):
    import tempfile

    as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable]
    probe = subprocess.run([*as_nobody, "-c", "import labelloop.tui.cli"], capture_output=True, cwd=ROOT, timeout=60)
    if probe.returncode != 0:  # e.g. the checkout lives in a folder only root may read (mktemp -d)
        pytest.skip("the unprivileged user cannot read this checkout or its virtual environment")
    base = Path(tempfile.mkdtemp(prefix="labelloop-ro-", dir="/tmp"))
    os.chmod(base, 0o777)
    ro = base / "ro"
    ro.mkdir()
    f = write_csv(ro / "in.csv", ["id", "text"], [["a", "fine"], ["b", ""]])
    os.chmod(ro, 0o555)
    proj = init_project(base / "p", ["x", "y"])
    for p in [base, *proj.rglob("*"), proj]:
        os.chmod(p, 0o777 if p.is_dir() else 0o666)
    cmd = [*as_nobody, "-m", "labelloop.tui.cli", "import", str(proj), str(f), "--id-col", "id", "--skip-invalid"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert r.returncode == 2 and "cannot write the rejected rows" in r.stderr, r.stderr
        with Project.open(proj) as p:
            assert p.store.item_count() == 0
    finally:
        os.chmod(ro, 0o755)
        shutil.rmtree(base, ignore_errors=True)


def test_label_names_with_control_characters_are_refused(tmp_path):
    r = run_cli("init", str(tmp_path / "p"), "--labels", "ok\x1b[31m,b")
    assert r.returncode == 2 and "control characters" in r.stderr and "\x1b" not in r.stderr
    assert not (tmp_path / "p" / CONFIG_NAME).exists()


def test_config_that_is_a_folder(tmp_path):
    d = tmp_path / "p"
    (d / CONFIG_NAME).mkdir(parents=True)
    r = run_cli("status", str(d))
    assert r.returncode == 2 and "is not a file" in r.stderr


def test_foreign_duckdb_is_refused_and_left_untouched(tmp_path):
    import duckdb

    d = init_project(tmp_path / "p", ["a", "b"])
    (d / "project.duckdb").unlink()
    con = duckdb.connect(str(d / "project.duckdb"))
    con.execute("CREATE TABLE items (id INTEGER, name VARCHAR)")
    con.execute("INSERT INTO items VALUES (1, 'theirs')")
    con.close()
    before = hashlib.sha256((d / "project.duckdb").read_bytes()).hexdigest()
    for args in (("status", str(d)), ("next", str(d)), ("train", str(d))):
        r = run_cli(*args)
        assert r.returncode == 2 and "did not create" in r.stderr and "untouched" in r.stderr
    assert hashlib.sha256((d / "project.duckdb").read_bytes()).hexdigest() == before
    assert sorted(os.listdir(d)) == sorted(["project.duckdb", CONFIG_NAME, "guidelines.md", "models", "cache"])


@pytest.mark.parametrize(
    "args",
    [
        ("next", "{d}", "--n", "-1"),
        ("next", "{d}", "--n", "0"),
        ("train", "{d}", "--batch", "-5"),
        ("train", "{d}", "--batch", "0"),
    ],
)
def test_counts_below_one_are_refused(tmp_path, args):
    d = trained(tmp_path)
    with Project.open(d) as p:
        before = p.store.rows("SELECT count(*), max(batch_id) FROM queue")
    r = run_cli(*[a.format(d=d) for a in args])
    assert r.returncode == 2 and "at least 1" in r.stderr
    with Project.open(d) as p:
        assert p.store.rows("SELECT count(*), max(batch_id) FROM queue") == before


def test_deeply_nested_jsonl_is_one_sentence(tmp_path, project_dir):
    deep = "[" * 20000 + "]" * 20000
    f = tmp_path / "deep.jsonl"
    f.write_text(
        '{"id": "a", "text": "fine"}\n{"id": "b", "text": "x", "meta": ' + deep + "}\n"
        '{"id": "c", "text": ' + deep + "}\n"
    )
    r = run_cli("import", str(project_dir), str(f), "--id-col", "id")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "row 3" in r.stderr, r.stderr


def test_status_into_a_closed_pipe_is_quiet(tmp_path):
    d = trained(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "labelloop.tui.cli", "next", str(d), "--n", "5000", "--json"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.readline()
    proc.stdout.close()  # like `| head -1`
    err = proc.stderr.read()
    proc.wait(timeout=60)
    assert b"Traceback" not in err and b"Exception ignored" not in err and err == b""
    assert proc.returncode in (0, 141)


def test_damaged_cache_and_stop_set_are_rebuilt(tmp_path):
    d = trained(tmp_path)
    npz = d / "cache" / "features.npz"
    npz.write_bytes(npz.read_bytes()[:1000])
    (d / "models" / "stopset_v1.json").write_text('{"ords": [1, 2')
    r = run_cli("train", str(d), "--seed", "5")
    assert r.returncode == 0, r.stderr
    assert "feature cache" in r.stdout and "rebuilt" in r.stdout
    assert "stop-set predictions of model v1 are missing or damaged" in r.stdout
    r = run_cli("train", str(d), "--seed", "6")  # and the next run uses the rebuilt cache quietly
    assert r.returncode == 0 and "damaged" not in r.stdout
    with Project.open(d) as p:
        assert p.store.scalar("SELECT max(version) FROM models") == 3
        kappa = json.loads(p.store.scalar("SELECT metrics FROM models WHERE version = 3"))["stop_kappa"]
        assert kappa is not None


# --- 9. silent coercions ---------------------------------------------------------------------------


def test_bom_csv_imports_with_clean_column_names(tmp_path, project_dir):
    f = tmp_path / "excel.csv"
    f.write_bytes("\ufeffid,text\r\nx1,hello\r\nx2,world\r\n".encode("utf-8"))
    r = run_cli("import", str(project_dir), str(f), "--id-col", "id")
    assert r.returncode == 0, r.stderr
    with Project.open(project_dir) as p:
        assert p.store.rows("SELECT id, text FROM items ORDER BY ord") == [("x1", "hello"), ("x2", "world")]


def test_jsonl_text_must_be_a_string(tmp_path, project_dir):
    f = write_jsonl(
        tmp_path / "t.jsonl",
        [
            {"id": "a", "text": {"k": 1}},
            {"id": "b", "text": [1, 2]},
            {"id": "c", "text": 5},
            {"id": 7, "text": "number ids are fine"},
        ],
    )
    r = run_cli("import", str(project_dir), str(f), "--id-col", "id")
    assert r.returncode == 2 and "text must be a JSON string, got OBJECT" in r.stderr and "2 more" in r.stderr
    r = run_cli("import", str(project_dir), str(f), "--id-col", "id", "--skip-invalid")
    assert r.returncode == 0
    with Project.open(project_dir) as p:
        assert p.store.rows("SELECT id, text FROM items") == [("7", "number ids are fine")]


def test_repeated_header_column_is_refused(tmp_path, project_dir):
    f = write_csv(tmp_path / "h.csv", ["id", "text", "text"], [["a", "one", "two"]])
    r = run_cli("import", str(project_dir), str(f), "--id-col", "id")
    assert r.returncode == 2 and "column 'text'" in r.stderr and "twice" in r.stderr


def test_one_definition_of_undecided(tmp_path):
    """status, next and the workstation's queue agree, with skips and flags among the decisions."""
    from labelloop.core.api.workspace import Workspace
    from labelloop.core.store.reports import project_status

    d = trained(tmp_path)
    ws = Workspace(d, actor="alice")
    items = ws.next_items(6)
    ws.flag(items[0], "unclear")
    ws.skip(items[1])
    ws.label(items[2], [TRUTH[items[2].item_id]])
    ws.label(items[3], [TRUTH[items[3].item_id]])
    ws.undo()
    left = ws.queue_length()
    ws.close()
    with Project.open(d) as p:
        st = project_status(p)
        assert st["queue"] == len(queued_items(p)) == left == 50 - 3
        assert p.store.scalar("SELECT count(*) FROM open_queue") == left


# --- 3. a digit that differs from the suggestion is a correction ------------------------------------


def test_label_that_differs_from_the_suggestion_is_a_counted_correction(tmp_path):
    from labelloop.core.api.workspace import Workspace
    from labelloop.core.loop.metrics import metrics_snapshot
    from labelloop.core.store.reports import project_status

    d = trained(tmp_path)
    ws = Workspace(d, actor="alice")
    agree = disagree = 0
    for _ in range(10):
        it = ws.current()
        other = [lab for lab in ws.config.labels if lab != it.suggestion][0]
        if disagree < 5:
            ws.label(it, [other])
            disagree += 1
        else:
            ws.label(it, [it.suggestion])
            agree += 1
    snap = metrics_snapshot(ws.project)
    ws.close()
    ev = pl.DataFrame(_events(d))
    assert (ev["via"] == "correction").sum() == 5 and (ev["error_category"] == "unspecified").sum() == 5
    assert (ev["via"] == "key-agrees").sum() == 5
    assert snap["corrections"] == {"unspecified": 5}
    with Project.open(d) as p:
        assert project_status(p)["corrections"] == {"unspecified": 5}
    out = tmp_path / "o.parquet"
    assert run_cli("export", str(d), str(out)).returncode == 0
    df = pl.read_parquet(out).filter(pl.col("decided_by_actor") == "alice")
    assert df.filter(pl.col("error_categories").list.contains("unspecified")).height == 5


def test_ask_reason_requires_a_reason_from_scripts(tmp_path):
    from labelloop.core.api.workspace import Workspace
    from labelloop.core.util.errors import LabelloopError

    d = trained(tmp_path)
    cfg = d / CONFIG_NAME
    cfg.write_text(cfg.read_text().replace("ask_reason = false", "ask_reason = true"))
    ws = Workspace(d, actor="alice")
    it = ws.current()
    other = [lab for lab in ws.config.labels if lab != it.suggestion][0]
    with pytest.raises(LabelloopError, match="asks for a reason"):
        ws.label(it, [other])
    ws.label(it, [other], reason="ambiguous", note="both readings")
    ws.close()
    e = _events(d)[-1]
    assert (e["via"], e["error_category"], e["note"]) == ("correction", "ambiguous", "both readings")


def _events(d):
    with Project.open(d) as p:
        return p.store.dicts("SELECT * FROM events WHERE actor = 'alice' ORDER BY event_id")


# --- 1. the control arm in the loop (core level; the workstation test is in test_tui_trust.py) -----


def test_retrain_carries_the_unlabelled_audit_items(tmp_path):
    d = trained(tmp_path)
    with Project.open(d) as p:
        before = {it["item_id"] for it in queued_items(p) if it["audit"]}
        assert len(before) == 5
        # label the first 20 (what a retrain every 20 would see), then retrain
        for it in queued_items(p)[:20]:
            p.store.append_event(
                it["item_id"],
                "label",
                "alice",
                via="key",
                labels=[TRUTH[it["item_id"]]],
                audit=it["audit"],
                strategy=it["strategy"],
                batch_id=it["batch_id"],
            )
        still_open = {it["item_id"] for it in queued_items(p)} & before  # audit items nobody reached
        assert len(still_open) == 3  # one audit item in each tenth of the batch: two in the first 20
        train_and_queue(p, seed=9)
        after = {it["item_id"] for it in queued_items(p) if it["audit"]}
        assert len(after) == 5 and still_open <= after  # kept; only two drawn anew


# --- 11. duplicates ------------------------------------------------------------------------------------


def test_import_reports_duplicates_and_dedupe_keeps_the_first(tmp_path, project_dir):
    pool = write_csv(
        tmp_path / "pool.csv",
        ["id", "text"],
        [["p1", "same text"], ["p2", "same text"], ["p3", "other"], ["p4", "leaked test text"]],
    )
    r = run_cli("import", str(project_dir), str(pool), "--id-col", "id")
    assert r.returncode == 0 and "1 rows repeat the exact text of an earlier row" in r.stdout
    test = write_csv(
        tmp_path / "test.csv",
        ["id", "text", "label", "split"],
        [["t1", "leaked test text", "ham", "test"], ["t2", "other", "spam", "test"], ["t3", "fresh", "ham", "test"]],
    )
    r = run_cli("import", str(project_dir), str(test), "--id-col", "id", "--label-col", "label", "--split-col", "split")
    assert r.returncode == 0
    assert "2 rows repeat the exact text of an item already in the project" in r.stdout
    assert "Leakage: 2 pool rows" in r.stdout and "--dedupe" in r.stdout
    more = write_csv(
        tmp_path / "more.csv",
        ["id", "text", "split"],
        [
            ["m1", "new one", "pool"],
            ["m2", "new one", "pool"],
            ["m3", "same text", "pool"],
            ["m4", "eval copy", "pool"],
            ["m5", "eval copy", "test"],
        ],
    )
    r = run_cli("import", str(project_dir), str(more), "--id-col", "id", "--split-col", "split", "--dedupe")
    assert r.returncode == 0 and "--dedupe dropped 3 duplicate rows" in r.stdout
    with Project.open(project_dir) as p:
        kept = p.store.rows("SELECT id FROM items WHERE id LIKE 'm%' ORDER BY id")
        assert kept == [("m1",), ("m5",)]  # the first 'new one'; the test copy of 'eval copy'
        assert p.store.scalar("SELECT rows_deduped FROM imports ORDER BY import_id DESC LIMIT 1") == 3


def test_no_batch_holds_two_identical_texts(tmp_path):
    rows = [[f"d{i}", "Call now to claim your free prize"] for i in range(30)]
    rows += [[f"u{i}", f"ordinary message {i} about {w}"] for i, w in enumerate(["lunch", "work", "home"] * 40)]
    d = init_project(tmp_path / "p", ["ham", "spam"])
    f = write_csv(tmp_path / "in.csv", ["id", "text"], rows)
    with Project.open(d) as p:
        import_file(p, f, id_col="id")
        r = train_and_queue(p, batch_size=60, seed=0)
        texts = [it["text"] for it in queued_items(p)]
        assert len(texts) == len(set(texts)) and r.notes and "repeat the exact text" in r.notes[-1]
        # once a copy is labelled, no other copy is queued again
        dup = next(it for it in queued_items(p) if it["text"].startswith("Call now"))
        p.store.append_event(dup["item_id"], "label", "alice", via="key", labels=["spam"])
        for it in queued_items(p):
            if it["item_id"] != dup["item_id"]:
                p.store.append_event(
                    it["item_id"], "label", "alice", via="key", labels=["ham" if "ordinary" in it["text"] else "spam"]
                )
        train_and_queue(p, batch_size=60, seed=1)
        assert not any(it["text"].startswith("Call now") for it in queued_items(p))


def test_simulate_removes_pool_test_duplicates(tmp_path):
    from labelloop.core.loop.simulate import SimConfig, run_simulation

    rows = [
        [f"p{i}", t, lab, "pool"]
        for i, (t, lab) in enumerate(
            [(f"win a prize {i}", "spam") if i % 5 == 0 else (f"see you at {i}", "ham") for i in range(300)]
        )
    ]
    rows += [["t0", "see you at 1", "ham", "test"], ["t1", "win a prize 5", "spam", "test"]]
    rows += [[f"t{i}", f"hello {i}", "ham", "test"] for i in range(2, 60)] + [["tx", "win big prize", "spam", "test"]]
    f = write_csv(tmp_path / "s.csv", ["id", "text", "label", "split"], rows)
    rep = run_simulation(
        f, "text", "label", SimConfig(["random"], seed_size=20, batch=20, budget=60, repeats=1), split_col="split"
    )
    assert rep.pool_size == 298 and any("removed 2 pool rows" in n for n in rep.notes)


# --- 10 and 12. the export's source file, and the demo ----------------------------------------------


def test_demo_is_a_good_first_five_minutes(tmp_path):
    from labelloop.core.api.workspace import Workspace
    from labelloop.core.loop.demo import GUIDELINES, build_demo

    d, created = build_demo(tmp_path / "demo")
    assert created and (d / "guidelines.md").read_text() == GUIDELINES and "Describe when to use" not in GUIDELINES
    with Project.open(d) as p:
        cfg = p.config
        assert r"\b" in cfg.seed_query
        sources = p.store.rows("SELECT DISTINCT source_file FROM items")
        assert sources == [(str(ROOT / "sample_data" / "sms_spam.csv"),)]
        # no pool text is also a test text (the sample has 174 such rows; --dedupe drops them)
        assert (
            p.store.scalar("""SELECT count(*) FROM items a JOIN items b ON a.text = b.text
                                 WHERE a.split = 'pool' AND b.split = 'test'""")
            == 0
        )
        assert p.store.scalar("SELECT count(*) FROM items WHERE split = 'pool' AND source_labels IS NOT NULL") == 0
        matched = [it for it in queued_items(p) if "keyword match" in it["strategy"]]
        assert matched and not any(
            "showing" in it["text"].lower() and "win" not in it["text"].lower().split() for it in matched
        )
    import re

    assert not re.search(cfg.seed_query, "he was showing the tools", re.I)
    # label the first 25 as a careful annotator would; the first model must beat the majority baseline
    ws = Workspace(d, actor="oracle")
    for _ in range(25):
        it = ws.current()
        ws.label(it, [TRUTH[it.item_id]])
    r = ws.retrain(seed=0)
    ws.close()
    m = r.metrics
    assert m["accuracy"] >= m["majority_baseline"] > 0.8, m
    out = tmp_path / "x.parquet"
    assert run_cli("export", str(d), str(out)).returncode == 0
    assert pl.read_parquet(out)["source_file"].unique().to_list() == [str(ROOT / "sample_data" / "sms_spam.csv")]


def test_prior_correction_weights_keyword_seeded_labels():
    from labelloop.core.loop.al_round import prior_correction

    y = ["spam"] * 18 + ["ham"] * 2 + ["ham"] * 18 + ["spam"] * 2
    origins = ["keyword"] * 20 + ["random"] * 20
    w = prior_correction(y, origins)
    # random half: 18 ham / 2 spam -> prior ham (19/22); training share ham 20/40
    shares = {c: float(np.sum(w[np.array(y) == c])) / len(y) for c in ("ham", "spam")}
    assert shares["ham"] == pytest.approx(19 / 22) and shares["spam"] == pytest.approx(3 / 22)
    assert prior_correction(y, ["random"] * 40) is None  # no keyword seeding: no correction
    assert prior_correction(y, ["keyword"] * 38 + ["random"] * 2) is None  # too few random labels


def test_majority_baseline_is_printed_beside_accuracy(tmp_path):
    d = trained(tmp_path)
    r = run_cli("train", str(d), "--seed", "4")
    assert "majority-class baseline" in r.stdout
    status = run_cli("status", str(d)).stdout
    assert "majority_baseline" in status
    assert "random audit" in status and "AL strategy" in status and "target 10%" in status
