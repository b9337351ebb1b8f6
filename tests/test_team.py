"""Team mode, part 1: the project API's rules (leases, overlap, provenance, message ids, roles), read
back from the store. The socket transport and real OS users are in tests/test_serve.py."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from labelloop.core.api.client import LocalClient
from labelloop.core.api.protocol import ApiError
from labelloop.core.api.service import Service
from labelloop.core.config import CONFIG_NAME
from labelloop.core.store.project import Project
from tests.tui_helpers import TRUTH, build_project

TEAM_EDITS = (("overlap_share = 0.0", "overlap_share = 1.0"),)


class Clock:
    def __init__(self):
        self.t = 1_000_000.0

    def __call__(self):
        return self.t


def _project(tmp_path, *edits, trained=True, n_pool=300):
    return build_project(tmp_path / "proj", n_pool=n_pool, n_test=100, trained=trained, cfg_edits=edits)


def _events(d, where="TRUE"):
    with Project.open(d) as p:
        return p.store.dicts(f"SELECT * FROM event_log WHERE actor <> 'seed-annotator' AND {where} ORDER BY event_id")


def _seeded(d) -> list[str]:
    with Project.open(d) as p:
        return [r[0] for r in p.store.rows("SELECT item_id FROM event_log WHERE actor = 'seed-annotator'")]


def _label(c: LocalClient, item: dict, msg: str | None = None, **kw) -> dict:
    import uuid

    return c.call(
        "decide",
        item_id=item["item_id"],
        action="label",
        labels=[TRUTH[item["item_id"]]],
        msg_id=msg or uuid.uuid4().hex,
        **kw,
    )


@pytest.fixture
def team(tmp_path):
    """A new project (a cold-start batch, nothing labelled) where every item needs two annotators."""
    d = _project(tmp_path, *TEAM_EDITS, trained=False)
    clock = Clock()
    svc = Service(d, compute="thread", owner="admin", clock=clock)
    yield d, svc, clock
    svc.close()


def test_provenance_comes_from_the_queue_never_from_the_client(tmp_path):
    d = _project(tmp_path)
    svc = Service(d, compute="thread", owner="admin")
    alice = LocalClient(svc, "alice")
    item = alice.call("next")["item"]
    with pytest.raises(ApiError) as e:  # a forged provenance field is refused, nothing stored
        alice.call(
            "decide",
            item_id=item["item_id"],
            action="label",
            labels=["ham"],
            msg_id="m" * 12,
            model_version=999,
            strategy="forged",
        )
    assert e.value.code == "bad_request"
    with pytest.raises(ApiError) as e:
        alice.call("decide", item_id="no-such-item", action="label", labels=["ham"], msg_id="x" * 12)
    assert e.value.code == "unknown_item"
    other = svc.store.rows("SELECT item_id FROM queue WHERE item_id <> ? LIMIT 1", [item["item_id"]])[0][0]
    with pytest.raises(ApiError) as e:  # an item that exists but was not handed to alice
        alice.call("decide", item_id=other, action="label", labels=["ham"], msg_id="y" * 12)
    assert e.value.code == "not_leased"
    assert _events(d) == []
    _label(alice, item)
    (ev,) = _events(d)
    q = svc.store.dicts("SELECT * FROM queue WHERE item_id = ? AND batch_id = ?", [item["item_id"], item["batch_id"]])[
        0
    ]
    assert (ev["model_version"], ev["strategy"], ev["rank"], ev["audit"], ev["batch_id"]) == (
        q["model_version"],
        q["strategy"],
        q["rank"],
        q["audit"],
        q["batch_id"],
    ) and ev["model_version"] == 1
    assert json.loads(ev["shown_probs"]) == json.loads(q["probs"]) and ev["client_msg_id"]
    svc.close()


def test_a_resent_decision_is_stored_once_even_after_a_restart(tmp_path):
    d = _project(tmp_path)
    svc = Service(d, compute="thread", owner="alice")
    alice = LocalClient(svc, "alice")
    item = alice.call("next")["item"]
    first = _label(alice, item, msg="resend-0001")
    again = _label(alice, item, msg="resend-0001")
    assert again["duplicate"] and again["event_id"] == first["event_id"]
    svc.close()
    svc = Service(d, compute="thread", owner="alice")  # a server restarted between send and resend
    alice = LocalClient(svc, "alice")
    assert _label(alice, item, msg="resend-0001")["duplicate"]
    undo = alice.call("undo", msg_id="undo-0000001")
    assert alice.call("undo", msg_id="undo-0000001")["duplicate"]  # a resent undo takes back nothing more
    svc.close()
    evs = _events(d)
    assert [e["kind"] for e in evs] == ["label", "undo"] and undo["undone"] == item["item_id"]


def test_two_annotators_never_get_the_same_single_item_and_overlap_items_get_two(tmp_path):
    d = _project(tmp_path, ("overlap_share = 0.0", "overlap_share = 0.3"))
    svc = Service(d, compute="thread", owner="admin")
    a, b = LocalClient(svc, "alice"), LocalClient(svc, "bob")
    ia, ib = a.call("next")["item"], b.call("next")["item"]
    need = {i: svc.assign.need(i) for i in svc.assign.slots}
    if need[ia["item_id"]] == 1:
        assert ia["item_id"] != ib["item_id"]
    # label everything served (the seed annotator's overlap items first, then batch 2), alternating
    for _ in range(300):
        moved = False
        for c in (a, b):
            it = c.call("next")["item"]
            if it is not None and it["batch_id"] in (1, 2):
                _label(c, it)
                moved = True
        if not moved:
            break
    svc.close()
    per_item: dict[str, list[str]] = {}
    for e in _events(d, "kind = 'label'") + [{"item_id": i, "actor": "seed-annotator"} for i in _seeded(d)]:
        per_item.setdefault(e["item_id"], []).append(e["actor"])
    assert per_item
    for item_id, actors in per_item.items():
        assert len(actors) == len(set(actors)), f"{item_id} labelled twice by one annotator"
        assert len(actors) <= need.get(item_id, 1)
    doubles = [i for i, n in need.items() if n == 2]
    assert doubles and all(len(per_item.get(i, [])) == 2 for i in doubles)  # overlap reached on every one


def test_an_annotator_never_sees_another_annotators_label(team):
    d, svc, _ = team
    a, b = LocalClient(svc, "alice"), LocalClient(svc, "bob")
    item = a.call("next")["item"]
    _label(a, item)
    got = b.call("next")["item"]
    assert got["item_id"] == item["item_id"]  # the item needs bob's label too
    assert set(got) >= {"text", "probs"} and not any(k in got for k in ("labels", "annotations", "annotators"))
    assert got["probs"] == item["probs"]  # the model's view only, the same for both


def test_no_starvation_a_fast_annotator_gets_every_item_others_do_not_hold(tmp_path):
    d = _project(tmp_path)
    svc = Service(d, compute="thread", owner="admin")
    slow = [LocalClient(svc, f"slow{i}") for i in range(3)]
    held = {c.call("next")["item"]["item_id"] for c in slow}
    fast = LocalClient(svc, "fast")
    seen = []
    while (it := fast.call("next")["item"]) is not None and it["batch_id"] == 2:
        seen.append(it["item_id"])
        _label(fast, it)
    batch = {r[0] for r in svc.store.rows("SELECT item_id FROM queue WHERE batch_id = 2")}
    assert set(seen) == batch - held and len(seen) == len(batch) - 3
    for c in slow:  # the slow ones still finish their own
        it = c.call("next")["item"]
        assert it["item_id"] in held
        _label(c, it)
    svc.close()
    assert {e["item_id"] for e in _events(d, "kind = 'label'")} == batch


def test_leases_expire_and_a_closed_session_returns_its_item(team):
    d, svc, clock = team
    svc.assign.per_item = 1
    for s in svc.assign.slots.values():
        s.need = 1
    a, b = LocalClient(svc, "alice"), LocalClient(svc, "bob")
    item = a.call("next")["item"]
    assert b.call("next")["item"]["item_id"] != item["item_id"]
    b.call("decide", item_id=b.call("next")["item"]["item_id"], action="skip", msg_id="bob-skip-01")
    clock.t += svc.config.lease_minutes * 60 + 1  # alice walked away
    # bob has not decided anything he holds; the next free item for him is alice's expired one at some point
    got = []
    while (it := b.call("next")["item"]) is not None and it["item_id"] != item["item_id"] and len(got) < 100:
        got.append(it["item_id"])
        b.call("decide", item_id=it["item_id"], action="skip", msg_id=f"bob-{len(got):08d}")
    assert it is not None and it["item_id"] == item["item_id"]
    with pytest.raises(ApiError) as e:  # alice comes back: bob has it now
        _label(a, item)
    assert e.value.code == "not_leased"
    # a closed connection lets others take its items at once
    c = LocalClient(svc, "carol")
    held = c.call("next")["item"]
    c.close()
    dave = LocalClient(svc, "dave")
    assert dave.call("next")["item"]["item_id"] == held["item_id"]


def test_skip_does_not_hide_an_item_from_others_flag_does(team):
    d, svc, _ = team
    for s in svc.assign.slots.values():
        s.need = 1
    a, b = LocalClient(svc, "alice"), LocalClient(svc, "bob")
    first = a.call("next")["item"]
    a.call("decide", item_id=first["item_id"], action="skip", msg_id="alice-skip1")
    second = a.call("next")["item"]
    a.call("decide", item_id=second["item_id"], action="flag", note="broken text", msg_id="alice-flag1")
    ups = [i["item_id"] for i in b.call("next_items", n=500)["items"]]
    assert first["item_id"] in ups and second["item_id"] not in ups
    assert first["item_id"] not in [i["item_id"] for i in a.call("next_items", n=500)["items"]]


def test_undo_gives_the_item_back_to_its_annotator_first(team):
    d, svc, _ = team
    a = LocalClient(svc, "alice")
    item = a.call("next")["item"]
    nxt = _label(a, item)["item"]
    back = a.call("undo", msg_id="undo-alice-1")
    assert back["undone"] == item["item_id"] and back["item"]["item_id"] == item["item_id"]
    assert _label(a, back["item"])["item"]["item_id"] == nxt["item_id"]


def test_owed_labels_are_carried_over_a_new_batch(tmp_path):
    d = _project(tmp_path, ("overlap_share = 0.0", "overlap_share = 1.0"), trained=False)
    svc = Service(d, compute="thread", owner="admin")
    a, b = LocalClient(svc, "alice"), LocalClient(svc, "bob")
    done = []
    for _ in range(5):
        it = a.call("next")["item"]
        _label(a, it)
        done.append(it["item_id"])
    job = svc.handle("admin", "retrain_start", {"seed": 5})["job"]
    svc.wait_job()
    assert svc.job.error is None and svc.batch_id == 2
    ids = [b.call("next")["item"]["item_id"]]
    assert ids[0] in done  # bob is served what alice started before the new batch
    svc.close()
    svc = Service(d, compute="thread", owner="admin")  # and after a restart
    b = LocalClient(svc, "bob")
    assert b.call("next")["item"]["item_id"] in done
    svc.close()
    assert job["id"] == 1


def test_retrain_cadence_counts_every_annotators_labels(tmp_path):
    d = _project(tmp_path, ("retrain_every = 0", "retrain_every = 6"))
    svc = Service(d, compute="thread", owner="admin")
    a, b = LocalClient(svc, "alice"), LocalClient(svc, "bob")
    for i in range(3):
        _label(a, a.call("next")["item"])
        _label(b, b.call("next")["item"])
    assert svc.job is not None and svc.job.why.startswith("auto-retrain after 6")
    svc.wait_job()
    st = a.call("poll")
    assert st["batch"] == 3 and not st["retraining"] and st["job"]["report"]["model_version"] == 2
    svc.close()


def test_roles_unknown_users_and_denied_actions_are_refused_and_logged(tmp_path):
    d = _project(tmp_path)
    cfg = d / CONFIG_NAME
    text = (
        cfg.read_text()
        .replace("annotators = []", 'annotators = ["alice"]')
        .replace("reviewers = []", 'reviewers = ["rita"]')
    )
    cfg.write_text(text)
    svc = Service(d, compute="thread", owner="owner")
    with pytest.raises(ApiError) as e:
        svc.handle("mallory", "next", {})
    assert e.value.code == "unknown_user" and "mallory is not a member" in e.value.message
    with pytest.raises(ApiError) as e:
        svc.handle("alice", "export", {"path": str(tmp_path / "x.parquet")})
    assert e.value.code == "denied" and "reviewer" in e.value.message
    # the operation in words, never its internal name ("may not review queue")
    assert e.value.message.startswith("alice may not export labels in this project")
    with pytest.raises(ApiError) as e:
        svc.handle("alice", "retrain_start", {"strategy": "random"})
    assert e.value.code == "denied"
    assert not (tmp_path / "x.parquet").exists()
    svc.handle("rita", "export", {"path": str(tmp_path / "x.parquet")})
    assert (tmp_path / "x.parquet").exists()
    with pytest.raises(ApiError) as e:
        svc.handle("rita", "import", {"path": str(tmp_path / "x.parquet")})
    assert e.value.code == "denied"
    assert svc.roles_of("owner") == ["admin"] and svc.roles_of("alice") == ["annotator"]
    svc.close()
    denied = _events(d, "kind = 'denied'")
    # one event per user and minute; the rest of alice's minute is counted when the service closes
    assert [(e["actor"], e["note"].split(":")[0]) for e in denied[:3]] == [
        ("mallory", "next"),
        ("alice", "export"),
        ("rita", "import"),
    ]
    assert denied[3]["actor"] == "alice" and denied[3]["note"].startswith("1 more refusals between")
    assert "the last: retrain_start" in denied[3]["note"]


def test_bad_requests_get_a_code_not_a_crash(team):
    d, svc, _ = team
    a = LocalClient(svc, "alice")
    item = a.call("next")["item"]
    cases = [
        ("nope", {}),
        ("decide", {"item_id": item["item_id"]}),
        ("decide", {"item_id": item["item_id"], "action": "label", "labels": "ham", "msg_id": "z" * 12}),
        ("decide", {"item_id": item["item_id"], "action": "label", "labels": ["nolabel"], "msg_id": "z" * 12}),
        ("decide", {"item_id": item["item_id"], "action": "burn", "msg_id": "z" * 12}),
        ("decide", {"item_id": 5, "action": "label", "labels": ["ham"], "msg_id": "z" * 12}),
        ("decide", {"item_id": item["item_id"], "action": "label", "labels": ["ham"], "msg_id": "short"}),
        ("next_items", {"n": -1}),
        ("next", {"conn": 1}),
        ("next", {"actor": "bob"}),
    ]
    for op, args in cases:
        with pytest.raises(ApiError) as e:
            svc.handle("alice", op, args)
        assert e.value.code in ("bad_request", "unknown_op"), (op, args)
    assert _events(d) == []


def test_each_session_sees_how_many_others_work(team):
    d, svc, clock = team
    a, b, c = LocalClient(svc, "alice"), LocalClient(svc, "bob"), LocalClient(svc, "carol")
    sa = a.call("open_session", client="workstation")["session"]
    sb = b.call("open_session", client="workstation")["session"]
    b.call("open_session", client="workstation")  # bob in a second terminal counts once
    assert a.call("poll", session=sa)["others"] == 1
    c.call("open_session", client="workstation")
    assert a.call("poll", session=sa)["others"] == 2 and b.call("poll", session=sb)["others"] == 2
    b.close()  # bob's SSH session closed
    assert a.call("poll", session=sa)["others"] == 1
    clock.t += 3600  # carol went quiet an hour ago
    assert a.call("poll", session=sa)["others"] == 0


def test_status_shows_agreement_with_intervals_and_al_against_audit(team):
    """Two annotators on the same items (overlap 1.0): status gives percent agreement, kappa, AC1 and
    alpha with intervals, read back from the events; bob disagrees on every fourth item."""
    d, svc, _ = team
    a, b = LocalClient(svc, "alice"), LocalClient(svc, "bob")
    done = []
    for k in range(16):
        it = a.call("next")["item"]
        _label(a, it)
        got = b.call("next")["item"]
        assert got["item_id"] == it["item_id"]
        wrong = {"ham": "spam", "spam": "ham"}[TRUTH[it["item_id"]]]
        b.call(
            "decide",
            item_id=it["item_id"],
            action="label",
            msg_id=f"bob-{k:08d}",
            labels=[wrong if k % 4 == 0 else TRUTH[it["item_id"]]],
        )
        done.append(it)
    ag = svc.handle("alice", "status", {})["agreement"]
    assert ag["n_items_overlap"] == 16 and ag["annotators"] == ["alice", "bob"]
    pa = ag["overall"]["percent"]
    assert pa["value"] == pytest.approx(12 / 16) and pa["low"] <= pa["value"] <= pa["high"]
    for m in ("fleiss_kappa", "gwet_ac1", "krippendorff_alpha"):
        assert ag["overall"][m]["value"] is not None or ag["overall"][m]["reason"]
    n_audit = sum(bool(i["audit"]) for i in done)
    assert ag["by_arm"]["audit"]["percent"]["n_items"] == n_audit
    # a cold-start batch: its items are the cold-start arm, not AL (status once counted them as AL)
    assert ag["by_arm"]["cold"]["percent"]["n_items"] == 16 - n_audit
    assert ag["by_arm"]["al"]["percent"]["n_items"] == 0
    from labelloop.core.text.status import format_status

    text = format_status(ag and svc.handle("alice", "status", {}))
    assert "percent agreement      0.750 [" in text and "random-audit items" in text
    assert "cold-start items" in text and f"(n={16 - n_audit})" in text


def _two_annotators_label(svc, n, bob_wrong_every=4, actors=("alice", "bob")):
    """alice labels the truth; bob the other label on every 4th item. Returns the items."""
    clients = [LocalClient(svc, a) for a in actors]
    items = []
    for k in range(n):
        it = clients[0].call("next")["item"]
        _label(clients[0], it)
        got = clients[1].call("next")["item"]
        assert got["item_id"] == it["item_id"]
        wrong = {"ham": "spam", "spam": "ham"}[TRUTH[it["item_id"]]]
        clients[1].call(
            "decide",
            item_id=it["item_id"],
            action="label",
            msg_id=uuid.uuid4().hex,
            labels=[wrong if k % bob_wrong_every == 0 else TRUTH[it["item_id"]]],
        )
        items.append(it)
    return items


def test_review_queue_holds_exactly_the_disagreeing_and_flagged_items(team):
    d, svc, _ = team
    items = _two_annotators_label(svc, 12)
    carol = LocalClient(svc, "carol")
    flagged = carol.call("next")["item"]
    carol.call("decide", item_id=flagged["item_id"], action="flag", note="not English", msg_id="carol-flag-1")
    with pytest.raises(ApiError) as e:  # annotators do not review
        svc.handle("alice", "review_queue", {})
    assert e.value.code == "denied"
    q = svc.handle("admin", "review_queue", {})
    disagreeing = {items[k]["item_id"] for k in range(0, 12, 4)}
    assert {i["item_id"] for i in q["items"] if "disagreement" in i["reasons"]} == disagreeing
    assert {i["item_id"] for i in q["items"] if "flagged" in i["reasons"]} == {flagged["item_id"]}
    assert q["counts"] == {"disagreement": 3, "flagged": 1}
    st = svc.handle("alice", "status", {})
    assert st["review"] == {"waiting": 4, "by_reason": {"disagreement": 3, "flagged": 1}}
    from labelloop.core.text.status import format_status

    assert "4 items wait for a reviewer (disagreement 3, flagged 1)" in format_status(st)
    one = sorted(disagreeing)[0]
    view = svc.handle("admin", "review_item", {"item_id": one})
    assert [(e["actor"], e["kind"]) for e in view["events"]] == [("alice", "label"), ("bob", "label")]
    assert view["text"] and "labels" in view["events"][0]
    r = svc.handle(
        "admin",
        "adjudicate",
        {"item_id": one, "labels": [TRUTH[one]], "rationale": "guideline 2", "msg_id": "adjudicate-01"},
    )
    assert not r["duplicate"]
    assert svc.handle("admin", "adjudicate", {"item_id": one, "labels": [TRUTH[one]], "msg_id": "adjudicate-01"})[
        "duplicate"
    ]
    assert one not in {i["item_id"] for i in svc.handle("admin", "review_queue", {})["items"]}
    final = svc.store.dicts("SELECT labels, decided_by FROM final_labels WHERE item_id = ?", [one])[0]
    assert final == {"labels": [TRUTH[one]], "decided_by": "adjudication"}
    (ev,) = _events(d, "kind = 'adjudicate'")
    assert (ev["actor"], ev["note"], ev["via"]) == ("admin", "guideline 2", "review")
    # the export says how the item was decided, with every annotator's label, the reviewer and why
    out = d.parent / "final.parquet"
    svc.handle("admin", "export", {"path": str(out)})
    import polars as pl

    row = pl.read_parquet(out).filter(pl.col("item_id") == one).to_dicts()[0]
    assert (row["decided_by"], row["decided_by_actor"], row["rationale"], row["labels"]) == (
        "adjudication",
        "admin",
        "guideline 2",
        [TRUTH[one]],
    )
    assert sorted(row["annotators"]) == ["alice", "bob"] and len(set(row["annotator_labels"])) == 2


def test_tie_breaker_asks_a_third_annotator_before_review(tmp_path):
    d = _project(tmp_path, *TEAM_EDITS, ("tie_breaker = false", "tie_breaker = true"), trained=False)
    svc = Service(d, compute="thread", owner="admin")
    items = _two_annotators_label(svc, 4)
    split = items[0]["item_id"]  # bob disagreed on the first
    assert split not in {i["item_id"] for i in svc.handle("admin", "review_queue", {})["items"]}
    carol = LocalClient(svc, "carol")
    got = carol.call("next")["item"]
    assert got["item_id"] == split  # the tie-breaker is served first (owed)
    _label(carol, got)
    q = svc.handle("admin", "review_queue", {})
    assert [i["item_id"] for i in q["items"]] == [split] and len(q["items"][0]["labels"]) == 3
    agreed = items[1]["item_id"]
    assert carol.call("next")["item"]["item_id"] != agreed  # agreed items need no third label
    svc.close()


def test_annotators_agreeing_against_a_confident_model_go_to_review(tmp_path):
    d = _project(tmp_path, *TEAM_EDITS, ("dissent_threshold = 0.9", "dissent_threshold = 0.5"))
    svc = Service(d, compute="thread", owner="admin")
    a, b = LocalClient(svc, "alice"), LocalClient(svc, "bob")
    dissent = None
    for _ in range(80):
        it = a.call("next")["item"]
        if it["probs"] and dissent is None:
            top = max(it["probs"], key=it["probs"].get)
            other = {"ham": "spam", "spam": "ham"}[top]
            a.call("decide", item_id=it["item_id"], action="label", labels=[other], msg_id=uuid.uuid4().hex)
            got = b.call("next")["item"]
            while got["item_id"] != it["item_id"]:  # bob finishes the seed items owed a second label
                _label(b, got)
                got = b.call("next")["item"]
            b.call("decide", item_id=it["item_id"], action="label", labels=[other], msg_id=uuid.uuid4().hex)
            dissent = it["item_id"]
            break
        _label(a, it)
    q = svc.handle("admin", "review_queue", {})
    mine = [i for i in q["items"] if i["item_id"] == dissent]
    assert dissent and mine and mine[0]["reasons"][0].startswith("model dissent")
    assert all(not r.startswith("model dissent") for i in q["items"] if i["item_id"] != dissent for r in i["reasons"])
    svc.close()


def test_gold_items_are_mixed_in_blind_cannot_be_skipped_and_measure_each_annotator(tmp_path):
    from labelloop.core.store.imports import import_file
    from tests.conftest import write_csv

    d = _project(tmp_path, ("gold_share = 0.05", "gold_share = 0.1"), ("batch_size = 50", "batch_size = 150"))
    sample = [(k, v) for k, v in TRUTH.items()][-40:]  # items not in the project yet
    write_csv(
        tmp_path / "gold.csv",
        ["id", "text", "label", "split", "tier"],
        [
            [
                f"g{k}",
                f"gold text {k} " + ("win a prize" if v == "spam" else "see you at home"),
                v,
                "gold",
                "hard" if n % 2 else "easy",
            ]
            for n, (k, v) in enumerate(sample)
        ],
    )
    with Project.open(d) as p:
        import_file(p, tmp_path / "gold.csv", id_col="id", label_col="label", split_col="split")
    gold_truth = {f"g{k}": v for k, v in sample}
    svc = Service(d, compute="thread", owner="admin")
    a, b = LocalClient(svc, "alice"), LocalClient(svc, "bob")
    seen = {"alice": [], "bob": []}
    for c, name, right in ((a, "alice", True), (b, "bob", False)):
        for _ in range(40):
            it = c.call("next")["item"]
            if it["item_id"] in gold_truth:
                seen[name].append(it["item_id"])
                assert it["suggestion_hidden"] and it["strategy"] == "random" and not it["audit"]  # blind
                with pytest.raises(ApiError) as e:
                    c.call("decide", item_id=it["item_id"], action="skip", msg_id=uuid.uuid4().hex)
                assert "cannot be skipped" in e.value.message
                truth = gold_truth[it["item_id"]]
                lab = truth if right else {"ham": "spam", "spam": "ham"}[truth]
                c.call("decide", item_id=it["item_id"], action="label", labels=[lab], msg_id=uuid.uuid4().hex)
            else:
                _label(c, it)
    assert len(seen["alice"]) == 4 and len(set(seen["alice"])) == 4  # every 10th item, never twice
    gold = svc.handle("admin", "status", {})["gold"]
    assert gold["alice"]["accuracy"] == 1.0 and not gold["alice"]["below_threshold"]
    assert gold["bob"]["accuracy"] == 0.0 and gold["bob"]["below_threshold"]
    assert sum(t["n"] for t in gold["alice"]["per_tier"].values()) == 4
    arms = svc.handle("admin", "status", {})["arms"]
    assert arms["total"] == 40 + 72  # the seed labels and the 72 non-gold decisions: gold is no arm
    evs = _events(d, "strategy = 'gold'")
    assert len(evs) == 8 and {e["item_id"] for e in evs} <= set(gold_truth)
    with Project.open(d) as p:  # gold never trains the model
        from labelloop.core.store import rounds

        assert not {i for i in gold_truth} & {
            r[0]
            for r in p.store.rows(
                "SELECT i.id FROM items i WHERE i.ord IN (SELECT unnest(?::BIGINT[]))",
                [[o for o, *_ in rounds.labelled(p.store)]],
            )
        }
    # the next model version's live measurement stores the gold error rate by tier (read back from the store)
    job = svc.handle("admin", "retrain_start", {})["job"]
    while job["running"]:
        time.sleep(0.05)
        job = svc.handle("admin", "retrain_poll", {"job": job["id"]})["job"]
    assert job["error"] is None
    last = svc.handle("admin", "check", {})["measurements"][-1]
    tiers = last["gold_error_by_tier"]
    assert set(tiers) == {"easy", "hard"} and sum(t["n"] for t in tiers.values()) == 8
    assert sum(t["errors"] for t in tiers.values()) == 4  # bob's four answers, all wrong
    svc.close()


def test_gold_pause_stops_an_annotator_below_the_bar(tmp_path):
    from labelloop.core.store.imports import import_file
    from tests.conftest import write_csv

    d = _project(
        tmp_path,
        ("gold_share = 0.05", "gold_share = 0.5"),
        ("gold_pause = false", "gold_pause = true"),
        ("batch_size = 50", "batch_size = 150"),
    )
    sample = list(TRUTH.items())[-30:]
    write_csv(
        tmp_path / "gold.csv",
        ["id", "text", "label", "split"],
        [[f"g{k}", f"gold {k} " + ("win now" if v == "spam" else "home soon"), v, "gold"] for k, v in sample],
    )
    with Project.open(d) as p:
        import_file(p, tmp_path / "gold.csv", id_col="id", label_col="label", split_col="split")
    gold_truth = {f"g{k}": v for k, v in sample}
    svc = Service(d, compute="thread", owner="admin")
    bob = LocalClient(svc, "bob")
    wrong_gold = 0
    with pytest.raises(ApiError) as e:
        for _ in range(60):
            it = bob.call("next")["item"]
            if it["item_id"] in gold_truth:
                wrong_gold += 1
                bob.call(
                    "decide",
                    item_id=it["item_id"],
                    action="label",
                    msg_id=uuid.uuid4().hex,
                    labels=[{"ham": "spam", "spam": "ham"}[gold_truth[it["item_id"]]]],
                )
            else:
                _label(bob, it)
    assert e.value.code == "denied" and "bob is paused: 0 of 10 check items right" in e.value.message
    assert wrong_gold == 10
    assert len(_events(d, "strategy = 'gold'")) == 10  # the tenth answer was stored, then the pause
    assert _events(d, "kind = 'denied'")[-1]["actor"] == "bob"
    svc.close()


def test_unanimous_items_skip_review_unless_configured(tmp_path):
    for setting, expected in (("false", set()), ("true", {"unanimous (review_unanimous = true)"})):
        d = _project(
            tmp_path / setting,
            *TEAM_EDITS,
            ("review_unanimous = false", f"review_unanimous = {setting}"),
            trained=False,
        )
        svc = Service(d, compute="thread", owner="admin")
        items = _two_annotators_label(svc, 4, bob_wrong_every=99)  # bob agrees except on the first
        q = svc.handle("admin", "review_queue", {})
        reasons = {r for i in q["items"] if i["item_id"] != items[0]["item_id"] for r in i["reasons"]}
        assert reasons == expected
        svc.close()
