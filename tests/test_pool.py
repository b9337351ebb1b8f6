"""An external pool (a folder of Parquet files) featurised and scored partition by partition, in this
process and on a real ``distributed.LocalCluster`` of 2 worker processes: the batch equals the
in-process batch over the same rows for the same seed; a worker killed while scoring changes
nothing; bad partitions are one sentence naming the file (issue 18)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labelloop.core.config import check_cluster_setting
from labelloop.core.engine.model import fit_model
from labelloop.core.engine.strategies import select_batch
from labelloop.core.loop.al_round import score_pool
from labelloop.core.pool.compute import ClusterError, InProcess, open_compute
from labelloop.core.pool.partitions import PoolError, refresh, register
from labelloop.core.pool.scoring import featurise_pool, fit_pool_featurizer, nth_free, select_external

pytestmark = pytest.mark.xdist_group("pool-cluster")  # one LocalCluster per worker of the suite

WORDS = {
    "sport": "match goal team coach league striker season cup final referee".split(),
    "tech": "chip server code cloud laptop kernel python robot screen data".split(),
    "food": "pasta bread cheese recipe oven sauce salad spice soup bake".split(),
}
COMMON = "the a of and today really new big small good".split()
SIZES = (430, 0, 610, 380, 520)  # uneven partitions, one empty


def _texts(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    classes = list(WORDS)
    ys, texts = [], []
    for _ in range(n):
        c = classes[int(rng.integers(3))]
        other = classes[int(rng.integers(3))]
        words = list(rng.choice(WORDS[c], 3)) + list(rng.choice(WORDS[other], 2)) + list(rng.choice(COMMON, 3))
        rng.shuffle(words)
        ys.append(c)
        texts.append(" ".join(words))
    return texts, ys


def _write_pool(folder, sizes=SIZES, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    texts, ys = _texts(sum(sizes), seed)
    start = 0
    for i, n in enumerate(sizes):
        pl.DataFrame(
            {
                "id": [f"doc-{j}" for j in range(start, start + n)],
                "text": texts[start : start + n],
                "source": ["crawl"] * n,
            },
            schema={"id": pl.Utf8, "text": pl.Utf8, "source": pl.Utf8},
        ).write_parquet(folder / f"part-{i:02d}.parquet")
        start += n
    return texts, ys


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    base = tmp_path_factory.mktemp("pool")
    texts, ys = _write_pool(base / "data")
    manifest = register(base / "data")
    # 2^15 hashed columns instead of 2^18 (the same code, a smaller SVD in the diversity cases)
    feats = featurise_pool(
        manifest, base / "project", InProcess(), fit_pool_featurizer(manifest, InProcess(), hash_bits=15)
    )
    X_all = feats.featurizer.transform_text(texts)
    labelled = np.arange(0, len(texts), 17)[:90]
    model = fit_model(X_all[labelled], [ys[i] for i in labelled], list(WORDS), C=1.0, held_out="alo")
    return dict(base=base, texts=texts, ys=ys, manifest=manifest, feats=feats, X=X_all, labelled=labelled, model=model)


@pytest.fixture(autouse=True)
def _no_cluster_left():
    """A round started a cluster in this process (core/loop/poolround.py keeps it between rounds): close it."""
    yield
    from labelloop.core.loop.poolround import close_compute

    close_compute()


@pytest.fixture(scope="module")
def cluster():
    c = open_compute("local:2")
    yield c
    c.close()


def _free_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _in_process(pool, strategy, batch, seed, audit_share, exclude, carry):
    """The batch of today's in-process path: one feature matrix, scores over the candidate rows,
    ``select_batch``; its rows turned into the pool's ordinals."""
    n = len(pool["texts"])
    cand = np.setdiff1d(np.arange(n), exclude)
    scores, _ = score_pool(pool["model"], pool["X"], cand, strategy)
    pos = {int(o): i for i, o in enumerate(cand)}
    sel = select_batch(
        strategy,
        len(cand),
        batch,
        rng=np.random.default_rng(seed),
        audit_share=audit_share,
        scores=scores,
        X_pool=pool["X"][cand] if strategy == "diversity" else None,
        carry_audit=np.array([pos[int(c)] for c in carry], dtype=np.int64),
    )
    sel.index = cand[sel.index]
    return sel


def _same(a, b):
    assert a.index.tolist() == b.index.tolist()
    assert a.audit.tolist() == b.audit.tolist()
    assert a.strategy == b.strategy
    assert a.rank.tolist() == b.rank.tolist()
    np.testing.assert_array_equal(a.score, b.score)
    np.testing.assert_array_equal(a.percentile, b.percentile)


CASES = [
    ("margin", 0.0),
    ("entropy", 0.0),
    ("least_confidence", 0.0),
    ("diversity", 0.0),
    ("margin", 0.2),
    ("diversity", 0.25),
    ("random", 0.0),
]


@pytest.mark.parametrize("strategy,audit_share", CASES)
def test_the_batch_over_partitions_equals_the_in_process_batch(pool, cluster, strategy, audit_share):
    """Same seed, same rows: the batch chosen partition by partition, in this process and on a
    LocalCluster of 2 workers, is the in-process batch (ordinals, order, audit places, scores and
    percentiles), with labelled rows excluded and last batch's audit items carried."""
    exclude = pool["labelled"]
    carry = np.array([5, 1000, 1901]) if audit_share else np.zeros(0, dtype=np.int64)
    want = _in_process(pool, strategy, 40, 7, audit_share, exclude, carry)
    assert len(want) == 40
    for compute in (InProcess(), cluster):
        got = select_external(
            pool["feats"], pool["manifest"], compute, pool["model"], strategy, 40,
            rng=np.random.default_rng(7), audit_share=audit_share, exclude=exclude, carry_audit=carry,
        )  # fmt: skip
        _same(got, want)
    if audit_share:
        audit = set(want.index[want.audit].tolist())
        assert audit >= {5, 1000, 1901} and len(audit) == round(40 * audit_share)


def test_a_worker_killed_while_scoring_gives_the_same_batch(pool, tmp_path, monkeypatch):
    """The first worker to score a partition stops at a fault point and is killed (SIGKILL): Dask
    reruns its partitions elsewhere and the batch is the one the in-process path chooses."""
    marker = tmp_path / "reached"
    monkeypatch.setenv("LABELLOOP_FAULT", "pool-score")
    monkeypatch.setenv("LABELLOOP_FAULT_ONCE", "1")
    monkeypatch.setenv("LABELLOOP_FAULT_MARKER", str(marker))
    monkeypatch.setenv("LABELLOOP_FAULT_SLEEP", "120")
    c = open_compute("local:2")  # its workers inherit the fault settings
    try:
        out = {}

        def run():
            out["sel"] = select_external(
                pool["feats"], pool["manifest"], c, pool["model"], "margin", 30,
                rng=np.random.default_rng(3), audit_share=0.1, exclude=pool["labelled"],
            )  # fmt: skip

        t = threading.Thread(target=run)
        t.start()
        deadline = time.time() + 60
        while not marker.exists() and time.time() < deadline:
            time.sleep(0.1)
        assert marker.exists(), "no worker reached the fault point"
        pid = int(marker.read_text().split()[-1])
        assert pid != os.getpid()
        os.kill(pid, signal.SIGKILL)
        t.join(120)
        assert not t.is_alive()
    finally:
        c.close()
    _same(out["sel"], _in_process(pool, "margin", 30, 3, 0.1, pool["labelled"], np.zeros(0, dtype=np.int64)))


def test_a_worker_killed_while_featurising_costs_only_its_partitions(tmp_path, monkeypatch):
    """A worker killed (SIGKILL) while it featurises a partition: Dask reruns that task elsewhere, every
    partition ends featurised once, and the features are those of an undisturbed run."""
    folder = tmp_path / "data"
    _write_pool(folder, sizes=(120, 90, 150, 60))
    m = register(folder)
    marker = tmp_path / "reached"
    monkeypatch.setenv("LABELLOOP_FAULT", "pool-featurise")
    monkeypatch.setenv("LABELLOOP_FAULT_ONCE", "1")
    monkeypatch.setenv("LABELLOOP_FAULT_MARKER", str(marker))
    monkeypatch.setenv("LABELLOOP_FAULT_SLEEP", "120")
    fz = fit_pool_featurizer(m, InProcess(), hash_bits=15)
    c = open_compute("local:2")
    try:
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("f", featurise_pool(m, tmp_path / "p", c, featurizer=fz)))
        t.start()
        deadline = time.time() + 60
        while not marker.exists() and time.time() < deadline:
            time.sleep(0.1)
        assert marker.exists(), "no worker reached the fault point"
        os.kill(int(marker.read_text().split()[-1]), signal.SIGKILL)
        t.join(120)
        assert not t.is_alive()
    finally:
        c.close()
    monkeypatch.delenv("LABELLOOP_FAULT")
    f = out["f"]
    assert f.built == 4 and not f.skipped and len(f.specs) == 4
    calm = featurise_pool(m, tmp_path / "calm", InProcess(), featurizer=fz)
    from labelloop.core.pool.scoring import load_partition_features

    for a, b in zip(f.specs, calm.specs):
        assert (load_partition_features(a) != load_partition_features(b)).nnz == 0


def test_a_scheduler_that_does_not_answer_is_one_sentence(monkeypatch):

    import labelloop.core.pool.compute as compute

    monkeypatch.setattr(compute, "CONNECT_TIMEOUT", 2)
    port = _free_port()  # nothing listens there now
    with pytest.raises(ClusterError) as e:
        open_compute(f"tcp://127.0.0.1:{port}")
    msg = str(e.value)
    assert f"tcp://127.0.0.1:{port}" in msg and "did not answer" in msg and "\n" not in msg


def test_cluster_settings_are_checked():
    for ok in ("", "local:1", "local:8", "tcp://10.0.0.5:8786", "tcp://sched.lab:8786"):
        assert check_cluster_setting(ok) == ok
    for bad in ("local", "local:0", "local:99", "http://x:1", "tcp://x", "; rm -rf /"):
        with pytest.raises(ValueError):
            check_cluster_setting(bad)


def test_a_duplicate_id_a_missing_text_column_and_a_truncated_file_are_named(tmp_path):
    good = tmp_path / "good"
    _write_pool(good, sizes=(50, 60))
    m = register(good)
    assert m.n == 110 and [p.rows for p in m.partitions] == [50, 60] and m.meta_cols == ["source"]

    dup = tmp_path / "dup"
    _write_pool(dup, sizes=(50, 60))
    pl.DataFrame({"id": ["doc-3"], "text": ["again"], "source": ["x"]}).write_parquet(dup / "part-09.parquet")
    with pytest.raises(PoolError) as e:
        register(dup)
    assert "part-09.parquet" in str(e.value) and "'doc-3'" in str(e.value) and "unique" in str(e.value)

    notext = tmp_path / "notext"
    _write_pool(notext, sizes=(20,))
    pl.DataFrame({"id": ["z1"], "body": ["no text column"]}).write_parquet(notext / "part-05.parquet")
    with pytest.raises(PoolError) as e:
        register(notext)
    assert "part-05.parquet" in str(e.value) and "no 'text' column" in str(e.value)

    trunc = tmp_path / "trunc"
    _write_pool(trunc, sizes=(20, 30))
    f = trunc / "part-01.parquet"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(PoolError) as e:
        register(trunc)
    assert "part-01.parquet" in str(e.value) and "not a readable Parquet file" in str(e.value)

    empty = tmp_path / "empty"
    _write_pool(empty, sizes=(10,))
    pl.DataFrame({"id": ["e1", "e2"], "text": ["fine", "  "]}).write_parquet(empty / "part-07.parquet")
    with pytest.raises(PoolError) as e:
        register(empty)
    assert "part-07.parquet: row 2: 'text' is empty" in str(e.value)
    for err in (e,):
        assert "\n" not in str(err.value)


def test_featurised_once_and_a_lost_partition_rebuilt_alone(tmp_path):
    folder = tmp_path / "data"
    _write_pool(folder, sizes=(40, 50, 60))
    m = register(folder)
    first = featurise_pool(m, tmp_path / "p", InProcess())
    assert first.built == 3 and not first.skipped
    again = featurise_pool(m, tmp_path / "p", InProcess(), featurizer=first.featurizer)
    assert again.built == 0
    out = tmp_path / "p" / "pool_features" / first.featurizer.digest()
    (out / "part-00001.json").unlink()  # as if the worker building it had died before finishing
    third = featurise_pool(m, tmp_path / "p", InProcess(), featurizer=first.featurizer)
    assert third.built == 1
    assert not list(out.glob(".*.tmp"))


def test_a_partition_changed_since_registering_is_named_and_left_out(tmp_path):
    folder = tmp_path / "data"
    texts, ys = _write_pool(folder, sizes=(40, 50, 60))
    m = register(folder)
    pl.DataFrame({"id": ["doc-40"], "text": ["rewritten"]}).write_parquet(folder / "part-01.parquet")
    feats = featurise_pool(m, tmp_path / "p", InProcess())
    assert len(feats.skipped) == 1 and "part-01.parquet" in feats.skipped[0] and "changed" in feats.skipped[0]
    X = feats.featurizer.transform_text(texts)
    model = fit_model(X[:30], ys[:30], list(WORDS), C=1.0, held_out="alo")
    sel = select_external(feats, m, InProcess(), model, "margin", 100, rng=np.random.default_rng(0))
    assert len(sel) == 100 and not any(40 <= i < 90 for i in sel.index)  # none of the changed file's rows

    r = refresh(m)
    assert r.changed == ["part-01.parquet"] and r.added == [] and r.missing == []


def test_refresh_appends_new_files_and_keeps_the_ordinals(tmp_path):
    folder = tmp_path / "data"
    _write_pool(folder, sizes=(40, 50))
    m = register(folder)
    pl.DataFrame({"id": ["new-1", "new-2"], "text": ["a match today", "a new chip"]}).write_parquet(
        folder / "part-05.parquet"
    )
    r = refresh(m)
    assert r.added == ["part-05.parquet"] and r.manifest.n == 92
    assert [p.offset for p in r.manifest.partitions] == [0, 40, 90]
    assert "1 new file(s) registered (2 items)" in r.lines()[0]
    pl.DataFrame({"id": ["doc-1"], "text": ["clash"]}).write_parquet(folder / "part-06.parquet")
    with pytest.raises(PoolError) as e:
        refresh(r.manifest)
    assert "part-06.parquet" in str(e.value) and "'doc-1'" in str(e.value)


@settings(max_examples=200, deadline=None)
@given(st.sets(st.integers(0, 199), max_size=150), st.data())
def test_nth_free_is_the_complement_indexed(removed, data):
    removed = np.array(sorted(removed), dtype=np.int64)
    free = np.setdiff1d(np.arange(200), removed)
    if len(free) == 0:
        return
    ranks = np.array(data.draw(st.lists(st.integers(0, len(free) - 1), max_size=20)), dtype=np.int64)
    assert nth_free(removed, ranks).tolist() == free[ranks].tolist()


def test_the_in_process_path_never_imports_dask(tmp_path):
    """Unless a cluster is configured, neither dask nor distributed is imported: a whole external-pool
    selection in this process, and the workstation's loop modules."""
    folder = tmp_path / "data"
    _write_pool(folder, sizes=(40, 50))
    code = f"""
import sys
import numpy as np
from labelloop.core.pool.partitions import register
from labelloop.core.pool.compute import open_compute
from labelloop.core.pool.scoring import featurise_pool, select_external
from labelloop.core.engine.model import fit_model
import labelloop.core.loop.al_round, labelloop.core.api.service
m = register({str(folder)!r})
c = open_compute("")
f = featurise_pool(m, {str(tmp_path / "p")!r}, c)
X = f.featurizer.transform_text(["match goal team", "chip server code"] * 10)
model = fit_model(X, ["sport", "tech"] * 10, ["sport", "tech"], C=1.0, held_out="alo")
sel = select_external(f, m, c, model, "margin", 10, rng=np.random.default_rng(0))
assert len(sel) == 10
bad = [k for k in sys.modules if k.split(".")[0] in ("dask", "distributed")]
print("imported:", bad)
assert not bad
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "imported: []" in r.stdout


def _project_with_external_pool(tmp_path, cluster: str = ""):
    """A project whose test split is imported into it and whose pool is a folder of 5 Parquet files."""
    from tests.conftest import run_cli

    texts, ys = _write_pool(tmp_path / "pool")
    test_texts, test_ys = _texts(150, seed=9)
    pl.DataFrame(
        {"id": [f"t{i}" for i in range(150)], "text": test_texts, "label": test_ys, "split": ["test"] * 150}
    ).write_csv(tmp_path / "test.csv")
    d = tmp_path / "proj"
    assert run_cli("init", str(d), "--labels", "sport,tech,food").returncode == 0
    cfg = d / "labelloop.toml"
    text = cfg.read_text().replace("seed_size = 50", "seed_size = 30").replace("batch_size = 50", "batch_size = 40")
    if cluster:
        text = text.replace('cluster = ""', f'cluster = "{cluster}"')
    cfg.write_text(text)
    r = run_cli(
        "import", str(d), str(tmp_path / "test.csv"), "--id-col", "id", "--label-col", "label", "--split-col", "split"
    )
    assert r.returncode == 0, r.stderr
    r = run_cli("import", str(d), str(tmp_path / "pool"), "--external")
    assert r.returncode == 0, r.stderr
    return d, dict(zip([f"doc-{i}" for i in range(len(ys))], ys)), r.stdout


@pytest.mark.parametrize("cluster", ["", "local:2"])
def test_a_project_labels_from_an_external_pool_without_copying_it_in(tmp_path, cluster):
    """Registered with `import --external`, the pool stays in its files: the cold start is drawn over
    them, each batch's rows (and only those) become items, decided rows are never queued again, the
    batch after a retrain is the strategy's over the whole pool with its audit share, and status and
    check say where the pool is and what scored it."""
    from labelloop.core.api.service import Service
    from labelloop.core.loop.al_round import queued_items, train_and_queue
    from labelloop.core.store import rounds
    from labelloop.core.store.project import Project
    from labelloop.core.text.status import format_readiness, format_status

    d, truth, out = _project_with_external_pool(tmp_path, cluster)
    n_pool = sum(SIZES)
    assert f"External pool: {n_pool:,} items in 5 file(s)" in out and "5 partition(s) featurised" in out
    decided: set = set()
    with Project.open(d) as p:
        assert p.store.scalar("SELECT count(*) FROM items") == 150  # the test split only
        for rnd in range(3):
            train_and_queue(p, seed=11 + rnd)
            q = queued_items(p)
            ids = [it["item_id"] for it in q]
            assert len(ids) == (30 if rnd == 0 else 40) and not decided & set(ids)
            assert all(i in truth for i in ids)
            if rnd == 0:
                assert all(it["strategy"] == "cold start: random" for it in q)
            else:
                assert sum(it["audit"] for it in q) == 4 and all(
                    it["strategy"] == "margin" for it in q if not it["audit"]
                )
                assert all(it["probs"] for it in q)
            for it in q:
                p.store.append_event(
                    it["item_id"], "label", "ann", via="key", labels=[truth[it["item_id"]]],
                    batch_id=it["batch_id"], strategy=it["strategy"], audit=it["audit"],
                )  # fmt: skip
                decided.add(it["item_id"])
        train_and_queue(p, seed=20)
        q = queued_items(p)
        # only the rows ever queued are items: the pool stayed in its files
        n_items = p.store.scalar("SELECT count(*) FROM items WHERE split = 'pool'")
        assert n_items == len(decided) + len(q) and n_items < n_pool / 10
        src = p.store.rows("SELECT DISTINCT source_file FROM items WHERE split = 'pool'")
        assert all(s[0].startswith("pool:part-") for s in src)
        assert not decided & {it["item_id"] for it in q}
        v = rounds.latest_trained_version(p.store)
        assert (rounds.model_metrics(p.store, v) or {}).get("n_test", 150) == 150
    svc = Service(d, compute="thread")
    try:
        text = format_status(svc.handle("local", "status", {}))
        check = format_readiness(svc.handle("local", "check", {}))
    finally:
        svc.close()
    assert f"External pool     {n_pool:,}   items in 5 Parquet file(s)" in text
    if cluster:
        assert "a local Dask cluster of 2 worker process(es)" in text
        assert "compute: a local Dask cluster (local:2), 2 worker(s) answering" in check
    else:
        assert "Compute      in this process" in text and "compute: in this process" in check


def test_check_with_a_scheduler_that_does_not_answer_exits_2_with_one_sentence(tmp_path):

    from tests.conftest import run_cli

    d = tmp_path / "p"
    assert run_cli("init", str(d), "--labels", "a,b").returncode == 0
    port = _free_port()
    cfg = d / "labelloop.toml"
    cfg.write_text(cfg.read_text().replace('cluster = ""', f'cluster = "tcp://127.0.0.1:{port}"'))
    r = run_cli("check", str(d))
    assert r.returncode == 2, (r.stdout, r.stderr)
    err = r.stderr.strip()
    assert err.count("\n") == 0 and f"tcp://127.0.0.1:{port} did not answer" in err, err


def test_a_bad_cluster_setting_names_the_file_and_key(tmp_path):
    from tests.conftest import run_cli

    d = tmp_path / "p"
    assert run_cli("init", str(d), "--labels", "a,b").returncode == 0
    cfg = d / "labelloop.toml"
    cfg.write_text(cfg.read_text().replace('cluster = ""', 'cluster = "local:0"'))
    r = run_cli("status", str(d))
    assert r.returncode == 2
    assert "labelloop.toml: [compute] cluster local:N wants between 1 and 64 worker processes" in r.stderr


def test_a_retrain_whose_scheduler_does_not_answer_keeps_the_batch_and_says_so(tmp_path, monkeypatch):
    """The scheduler gone after the pool was registered: the retrain fails with one sentence naming
    it, the current batch stays queued for the annotators, and the next retrain (the scheduler back,
    here: the setting unset) queues a new batch."""

    import labelloop.core.pool.compute as compute
    from labelloop.core.loop import poolround
    from labelloop.core.loop.al_round import queued_items, train_and_queue
    from labelloop.core.store.project import Project

    monkeypatch.setattr(compute, "CONNECT_TIMEOUT", 2)
    d, truth, _out = _project_with_external_pool(tmp_path)
    with Project.open(d) as p:
        train_and_queue(p, seed=1)
        before = [it["item_id"] for it in queued_items(p)]
    port = _free_port()
    cfg = d / "labelloop.toml"
    cfg.write_text(cfg.read_text().replace('cluster = ""', f'cluster = "tcp://127.0.0.1:{port}"'))
    poolround.close_compute()
    with Project.open(d) as p:
        with pytest.raises(ClusterError) as e:
            train_and_queue(p, seed=2)
        assert f"tcp://127.0.0.1:{port} did not answer" in str(e.value) and "\n" not in str(e.value)
        assert [it["item_id"] for it in queued_items(p)] == before
    cfg.write_text(cfg.read_text().replace(f'cluster = "tcp://127.0.0.1:{port}"', 'cluster = ""'))
    with Project.open(d) as p:
        train_and_queue(p, seed=3)
        assert [it["item_id"] for it in queued_items(p)] != before
