"""The reviewer's screen (labelloop review) driven by keys, read back from the store."""

from __future__ import annotations

import uuid

import pytest

from labelloop.core.api.client import LocalClient
from labelloop.core.api.service import Service
from labelloop.core.store.project import Project
from labelloop.tui.review import ReviewApp
from tests.tui_helpers import TRUTH, build_project


@pytest.fixture
def disputed(tmp_path):
    """alice and bob labelled 8 items each (every item needs both); bob disagrees on every 4th."""
    d = build_project(
        tmp_path / "proj",
        n_pool=200,
        n_test=60,
        trained=False,
        cfg_edits=(("overlap_share = 0.0", "overlap_share = 1.0"),),
    )
    svc = Service(d, compute="thread", owner="lead")
    a, b = LocalClient(svc, "alice"), LocalClient(svc, "bob")
    split = []
    for k in range(8):
        it = a.call("next")["item"]
        a.call("decide", item_id=it["item_id"], action="label", labels=[TRUTH[it["item_id"]]], msg_id=uuid.uuid4().hex)
        b.call("next")
        wrong = {"ham": "spam", "spam": "ham"}[TRUTH[it["item_id"]]]
        b.call(
            "decide",
            item_id=it["item_id"],
            action="label",
            msg_id=uuid.uuid4().hex,
            labels=[wrong if k % 4 == 0 else TRUTH[it["item_id"]]],
        )
        if k % 4 == 0:
            split.append(it["item_id"])
    svc.close()
    return d, sorted(split)


def adjudications(d):
    with Project.open(d) as p:
        return p.store.dicts("""SELECT e.item_id, e.actor, e.labels, e.note, e.kind, e.target_event FROM event_log e
                                WHERE kind IN ('adjudicate', 'undo') ORDER BY event_id""")


async def test_pick_a_version_then_a_digit_with_rationale_and_undo(disputed):
    d, split = disputed
    app = ReviewApp(d, actor="rita")
    async with app.run_test(size=(120, 40)) as pilot:
        assert [i["item_id"] for i in app.queue] == split
        first = app.current["item_id"]
        assert len(app.versions) == 2 and {v["actor"] for v in app.versions} == {"alice", "bob"}
        alice_label = next(v["labels"] for v in app.versions if v["actor"] == "alice")
        letter = "a" if app.versions[0]["actor"] == "alice" else "b"
        await pilot.press(letter, *"per guideline 3", "enter")
        second = app.current["item_id"]
        assert second != first and len(app.queue) == 1
        await pilot.press("2", "enter")  # a digit: the project's second label, no rationale
        assert app.current is None
        await pilot.press("u")  # the latest adjudication comes back
        assert app.current["item_id"] == second
    rows = adjudications(d)
    assert [(r["item_id"], r["kind"], r["actor"]) for r in rows] == [
        (first, "adjudicate", "rita"),
        (second, "adjudicate", "rita"),
        (second, "undo", "rita"),
    ]
    assert rows[0]["labels"] == [alice_label] and rows[0]["note"] == "per guideline 3"
    assert rows[1]["labels"] == ["spam"] and rows[1]["note"] is None
    with Project.open(d) as p:
        final = dict(
            p.store.rows("SELECT item_id, decided_by FROM final_labels WHERE item_id IN (?, ?)", [first, second])
        )
    assert final == {first: "adjudication", second: "unresolved"}


async def test_escape_stores_nothing_and_n_moves_on(disputed):
    d, split = disputed
    app = ReviewApp(d, actor="rita")
    async with app.run_test(size=(120, 40)) as pilot:
        first = app.current["item_id"]
        await pilot.press("a", "escape")
        assert app.current["item_id"] == first
        await pilot.press("n")
        assert app.current["item_id"] != first
        screen = str(app.query_one("#detail").render())
        assert "why here: disagreement" in screen and "alice" in screen and "bob" in screen
        assert "1 to review, 1 passed over (waiting in all: disagreement 2)" in str(app.query_one("#queue").render())
    assert adjudications(d) == []


async def test_send_back_returns_the_item_to_its_annotators_with_the_reason(disputed):
    d, split = disputed
    app = ReviewApp(d, actor="rita")
    async with app.run_test(size=(120, 40)) as pilot:
        first = app.current["item_id"]
        await pilot.press("z", *"see rule 4 on names", "enter")
        assert app.current["item_id"] != first
    with Project.open(d) as p:
        undos = p.store.dicts("SELECT actor, note, target_event FROM event_log WHERE kind = 'undo' ORDER BY event_id")
        assert [u["note"] for u in undos] == ["sent back: see rule 4 on names"] * 2 and {u["actor"] for u in undos} == {
            "rita"
        }
        assert p.store.rows("SELECT count(*) FROM final_labels WHERE item_id = ?", [first])[0][0] == 0
    # alice gets it again first, with the reviewer's reason as the why
    from labelloop.core.api.workspace import Workspace

    ws = Workspace(d, actor="alice")
    assert ws.current().item_id == first and ws.current().why == "sent back by a reviewer: see rule 4 on names"
    ws.close()


async def test_metrics_pane_shows_agreement_with_intervals(disputed):
    from labelloop.tui.app import LabelApp

    d, _split = disputed
    app = LabelApp(d, actor="carol", retrain_in_process=False)
    async with app.run_test(size=(140, 50)) as pilot:
        await pilot.press("m")
        text = ""
        for _ in range(100):
            await pilot.pause(0.1)
            text = str(app.screen.query_one("#numbers").render())
            if "Fleiss" in text:
                break
        assert "8 items labelled by two or more annotators" in text
        assert "percent agreement 0.750 [0.500, 1.000]" in text and "per class (kappa): ham" in text
        assert "per annotator (agreement with the others): alice 0.75 [" in text
        assert "random-audit items" in text


async def test_a_hostile_send_back_reason_reaches_the_annotator_as_text(disputed):
    """A reviewer's reason is data: an OSC 52 (clipboard) sequence and markup in it are shown, not acted on."""
    from labelloop.tui.app import LabelApp

    d, split = disputed
    svc = Service(d, compute="thread", owner="rita")
    svc.handle(
        "rita",
        "send_back",
        {"item_id": split[0], "reason": "\x1b]52;c;SGk=\x07 [@click=app.quit]x[/] rule 4", "msg_id": "hostile-back"},
    )
    svc.close()
    app = LabelApp(d, actor="alice", retrain_in_process=False)
    async with app.run_test(size=(120, 40)) as pilot:
        assert app.ws.current().item_id == split[0]
        why = str(app.query_one("#why").render())
        assert "\x1b" not in why and "\x07" not in why and "␛]52;c;SGk=" in why and "[@click=app.quit]x[/]" in why
        await pilot.press("1")
        assert app.is_running  # the markup did not quit the app


async def test_the_review_screen_at_80x24_prompts_in_a_strip_and_has_its_own_help(disputed):
    """The rationale and send-back prompts leave the item in view; ? shows the reviewer's keys."""
    d, split = disputed
    app = ReviewApp(d, actor="rita")
    async with app.run_test(size=(80, 24)) as pilot:
        first = app.current["item_id"]
        item = app.query_one("#item").region
        for keys in (("a",), ("z",)):
            await pilot.press(*keys)
            await pilot.pause()
            dialog = app.screen.query_one("#dialog").region
            assert dialog.height <= 7 and dialog.y >= 24 - dialog.height - 1, dialog  # a strip at the bottom
            assert dialog.y >= item.y + 6, (dialog, item)  # the item's first lines stay visible
            await pilot.press("escape")
        await pilot.press("question_mark")
        await pilot.pause()
        from rich.console import Console

        console = Console(width=80, record=True, file=open("/dev/null", "w"))
        console.print(app.screen._keys())
        keys = console.export_text()
        assert "send the item back" in keys and "accept the model's suggestion" not in keys
        await pilot.press("escape")
        await pilot.press("a", "enter")  # take a version
        await pilot.pause()
        assert app.current["item_id"] != first
        await pilot.press("u")
        await pilot.pause()
        assert app.current["item_id"] == first
    assert [r["kind"] for r in adjudications(d)] == ["adjudicate", "undo"]


def test_the_review_screen_over_the_socket_talks_through_the_link(disputed):
    """With a server, the review screen's calls run on the link's thread; decisions land once."""
    import asyncio

    from labelloop.core.api.server import Server

    d, split = disputed
    srv = Server(d, compute="thread")
    srv.start()

    async def run():
        app = ReviewApp(d)
        assert app.link.threaded
        async with app.run_test(size=(80, 24)) as pilot:
            first = app.current["item_id"]
            await pilot.press("a", "enter")
            for _ in range(100):
                await pilot.pause(0.05)
                if app.current is None or app.current["item_id"] != first:
                    break
            assert app.current is None or app.current["item_id"] != first
            assert app.decided == 1

    try:
        asyncio.run(run())
    finally:
        srv.stop()
    assert [r["kind"] for r in adjudications(d)] == ["adjudicate"]


async def test_a_sent_back_item_says_why_it_has_no_suggestion(disputed):
    d, split = disputed
    svc = Service(d, compute="thread", owner="lead")
    LocalClient(svc, "lead").call("send_back", item_id=split[0], reason="names are ORG", msg_id=uuid.uuid4().hex)
    svc.close()
    from labelloop.tui.app import LabelApp

    app = LabelApp(d, actor="alice")
    async with app.run_test(size=(80, 24)):
        assert app.ws.current().item_id == split[0]
        shown = str(app.query_one("#suggestion").render())
        assert "No suggestion" in shown and "No model yet" not in shown
        assert "sent back by a reviewer: names are ORG" in str(app.query_one("#why").render())


async def test_the_review_screen_at_80x24_takes_a_version_sends_back_and_undoes_both(disputed):
    """At 80x24: adjudicate the first item, send the second back, then u twice: the send-back is taken
    back first (the annotators' labels stand again and nobody is asked again), then the adjudication."""
    d, split = disputed
    app = ReviewApp(d, actor="rita")
    async with app.run_test(size=(80, 24)) as pilot:
        first = app.current["item_id"]
        await pilot.press("a", "enter")  # take a version
        await pilot.pause()
        second = app.current["item_id"]
        assert second != first
        await pilot.press("z", *"names are ORG", "enter")  # send back
        await pilot.pause()
        assert app.current is None or app.current["item_id"] not in (first, second)
        await pilot.press("u")  # the send-back comes back first
        await pilot.pause()
        assert app.current["item_id"] == second and len(app.versions) == 2
        await pilot.press("u")  # then the adjudication
        await pilot.pause()
        assert app.current["item_id"] == first
        await pilot.press("question_mark")
        await pilot.pause()
        assert type(app.screen).__name__ == "HelpScreen"
        await pilot.press("escape")
    with Project.open(d) as p:
        final = dict(
            p.store.rows("SELECT item_id, decided_by FROM final_labels WHERE item_id IN (?, ?)", [first, second])
        )
        undos = p.store.dicts("SELECT item_id, target_event, note FROM event_log WHERE kind = 'undo' ORDER BY event_id")
    # both items are back as they were: two disagreeing annotators, no decision
    assert final == {first: "unresolved", second: "unresolved"}
    assert [u["item_id"] for u in undos] == [second, second, second, second, first]
    # nobody is asked to label the second item again
    svc = Service(d, compute="thread", owner="lead")
    try:
        for who in ("alice", "bob"):
            served = LocalClient(svc, who).call("next")["item"]
            assert served is None or served["item_id"] != second
    finally:
        svc.close()


def test_a_send_back_taken_back_is_not_served_again_by_the_same_server(disputed):
    d, split = disputed
    svc = Service(d, compute="thread", owner="lead")
    try:
        lead, alice = LocalClient(svc, "lead"), LocalClient(svc, "alice")
        lead.call("send_back", item_id=split[0], reason="names are ORG", msg_id=uuid.uuid4().hex)
        assert alice.call("next")["item"]["item_id"] == split[0]  # served first, with the reason
        alice.call("close_session")
        r = lead.call("undo_adjudication", msg_id=uuid.uuid4().hex)
        assert (r["undone"], r["what"]) == (split[0], "send_back")
        served = LocalClient(svc, "alice").call("next")["item"]
        assert served is None or served["item_id"] != split[0]
    finally:
        svc.close()
