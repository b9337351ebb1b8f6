"""A scripted two-annotator session through `labelloop serve` on TREC-6 (issue: agreement and review).

Pool 2,000 training questions, 500 test questions, 120 gold questions (from TREC's own test split,
tiered easy/hard by question length). Every item needs two annotators (overlap 1.0): "careful"
labels the truth, "sloppy" makes 15 % errors (a random other class). Both label through the server
(TCP token users, so no root is needed) until each has 300 decisions; retrains run every 25 labels
in the server's training process. Printed: agreement with intervals (overall, AL against audit
items), the review queue (checked to be exactly the items the two labelled differently), and gold
accuracy per annotator. Needs ../shared/datasets/trec/trec6.csv.

    python bench/bench_review.py
"""

from __future__ import annotations

import csv
import json
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._util import OUT, ROOT  # noqa: E402

DATA = ROOT.parent / "shared" / "datasets" / "trec" / "trec6.csv"


class Tcp:
    def __init__(self, port: int, user: str, token: str):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.f = self.s.makefile("rb")
        self.f.readline()  # the server's hello
        self.call("auth", user=user, token=token)

    def call(self, op: str, **args) -> dict:
        self.s.sendall((json.dumps({"id": 1, "op": op, "args": args}) + "\n").encode())
        ans = json.loads(self.f.readline())
        if not ans["ok"]:
            raise RuntimeError(f"{ans['error']['code']}: {ans['error']['message']}")
        return ans["data"]


def main() -> None:
    if not DATA.exists():
        raise SystemExit(f"{DATA} is not here (the shared data sets are outside the repository)")
    from labelloop.core.api.server import add_token
    from labelloop.core.loop.al_round import train_and_queue
    from labelloop.core.store.imports import import_file
    from labelloop.core.store.project import Project, init_project

    rows = list(csv.DictReader(open(DATA, encoding="utf-8")))
    rng = random.Random(0)
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    rng.shuffle(train)
    rng.shuffle(test)
    labels = sorted({r["label"] for r in rows})
    work = OUT / "review_bench"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    d = init_project(work / "proj", labels, name="trec6-review")
    cfg = d / "labelloop.toml"
    cfg.write_text(
        cfg.read_text()
        .replace("overlap_share = 0.1", "overlap_share = 1.0")
        .replace("batch_size = 50", "batch_size = 100")
    )
    f = work / "trec.csv"
    with open(f, "w", newline="", encoding="utf-8") as out:
        w = csv.writer(out)
        w.writerow(["id", "text", "label", "split", "tier"])
        for r in train[:2000]:
            w.writerow([f"p{r['id']}", r["text"], "", "pool", ""])
        for r in test[:380]:
            w.writerow([f"t{r['id']}", r["text"], r["label"], "test", ""])
        for r in test[380:500]:
            w.writerow([f"g{r['id']}", r["text"], r["label"], "gold", "hard" if len(r["text"].split()) > 9 else "easy"])
    truth = {f"p{r['id']}": r["label"] for r in train[:2000]} | {f"g{r['id']}": r["label"] for r in test[380:500]}
    with Project.open(d) as p:
        import_file(p, f, id_col="id", label_col="label", split_col="split", meta_cols=["tier"])
        train_and_queue(p, seed=0)
    tokens = {u: add_token(d, u) for u in ("careful", "sloppy")}
    port = 7600 + random.Random().randrange(300)
    server = subprocess.Popen(
        [sys.executable, "-m", "labelloop.tui.cli", "serve", str(d), "--tcp", f"127.0.0.1:{port}"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(300):
            try:
                clients = {u: Tcp(port, u, t) for u, t in tokens.items()}
                break
            except OSError:
                time.sleep(0.1)
        err = random.Random(15)
        given: dict[str, dict[str, str]] = {"careful": {}, "sloppy": {}}
        items = {u: c.call("next")["item"] for u, c in clients.items()}
        t0 = time.time()
        while min(len(g) for g in given.values()) < 300 and time.time() - t0 < 600:
            for u, c in clients.items():
                it = items[u]
                if it is None or len(given[u]) >= 300:
                    time.sleep(0.05)
                    items[u] = c.call("next")["item"] if len(given[u]) < 300 else None
                    continue
                lab = truth[it["item_id"]]
                if u == "sloppy" and err.random() < 0.15:
                    lab = err.choice([x for x in labels if x != lab])
                ans = c.call(
                    "decide",
                    item_id=it["item_id"],
                    action="label",
                    labels=[lab],
                    msg_id=uuid.uuid4().hex,
                    lease=it.get("lease"),
                )
                given[u][it["item_id"]] = lab
                items[u] = ans["item"]
        admin = Tcp(port, "careful", tokens["careful"])  # the status is the same for everyone
        st = admin.call("status")
        # the review queue needs a reviewer: ask through the owner's in-process view after stopping
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    from labelloop.core.api.service import Service

    svc = Service(d, compute="thread", owner="lead")
    q = svc.handle("lead", "review_queue", {})
    svc.close()
    both = set(given["careful"]) & set(given["sloppy"])
    differ = {i for i in both if given["careful"][i] != given["sloppy"][i] and not i.startswith("g")}
    queued = {i["item_id"] for i in q["items"] if "disagreement" in i["reasons"]}
    ag = st["agreement"]
    print(
        f"TREC-6 through labelloop serve: careful {len(given['careful'])} and sloppy {len(given['sloppy'])} "
        f"decisions; {ag['n_items_overlap']} items labelled by both"
    )
    for k, r in ag["overall"].items():
        print(
            f"  {k:<20} {r['value']:.3f} [{r['low']:.3f}, {r['high']:.3f}]"
            if r["value"] is not None
            else f"  {k:<20} undefined: {r['reason']}"
        )
    for arm, m in ag["by_arm"].items():
        r = m["percent"]
        print(
            f"  percent agreement on {arm:<6} items: "
            + (
                f"{r['value']:.3f} [{r['low']:.3f}, {r['high']:.3f}] (n={r['n_items']})"
                if r["value"] is not None
                else r["reason"]
            )
        )
    print(
        f"review queue: {len(q['items'])} items {q['counts']}; disagreeing pool items in the events: {len(differ)}; "
        f"queue == disagreements: {queued == differ}"
    )
    for actor, g in sorted(st["gold"].items()):
        tiers = ", ".join(f"{k} {v['accuracy']:.2f} (n={v['n']})" for k, v in sorted(g["per_tier"].items()))
        print(
            f"gold accuracy {actor:<8} {g['accuracy']:.3f} [{g['low']:.3f}, {g['high']:.3f}] n={g['n']}; {tiers}"
            + ("  (below threshold)" if g["below_threshold"] else "")
        )


if __name__ == "__main__":
    main()
