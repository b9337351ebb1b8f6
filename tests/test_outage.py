"""The workstation over the socket while the server goes away and comes back: the screen keeps
drawing and says "reconnecting… (N s)", a decision made meanwhile is held and sent once, and a second
one is refused with a sentence (the next item comes from the server)."""

from __future__ import annotations

import asyncio
import time

from labelloop.core.api.server import Server
from labelloop.core.store.project import Project
from labelloop.tui.app import LabelApp
from tests.tui_helpers import TRUTH, project_copy


def _decisions(d):
    with Project.open(d) as p:
        return p.store.dicts(
            "SELECT item_id, client_msg_id, kind FROM event_log WHERE actor <> 'seed-annotator' "
            "AND via <> 'import' AND kind IN ('label', 'skip', 'flag') ORDER BY event_id"
        )


def _key_for(app, item_id):
    label = TRUTH[item_id]
    return app.ws.config.label_keys[label]


async def _until(pilot, cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await pilot.pause(0.05)


def test_a_decision_made_while_the_server_is_away_is_held_and_stored_once(tmp_path):
    d = project_copy(tmp_path)
    srv = Server(d, compute="thread")
    srv.start()

    async def run():
        app = LabelApp(d)
        assert app.ws.transport == "socket" and app.link.threaded
        async with app.run_test(size=(80, 24)) as pilot:
            first = app.ws.current().item_id
            await pilot.press(_key_for(app, first))
            await _until(pilot, lambda: app.ws.current() is not None and app.ws.current().item_id != first)

            nonlocal srv
            srv.stop()
            second = app.ws.current().item_id
            await pilot.press(_key_for(app, second))  # made while the server is away: held
            await pilot.pause(2.5)
            line = str(app.query_one("#notice").render())
            assert "reconnecting…" in line and "1 decision held" in line, line
            assert app.link.held == 1
            await pilot.press("s")  # a second decision is refused: the next item is not known yet
            await pilot.pause(0.1)
            assert app.link.held == 1 and len(app.screen_stack) == 1

            srv = Server(d, compute="thread")
            srv.start()
            await _until(pilot, lambda: app.link.held == 0, timeout=20)
            await _until(pilot, lambda: "reconnecting" not in str(app.query_one("#notice").render()), timeout=5)
            third = app.ws.current().item_id
            assert third != second
            await pilot.press(_key_for(app, third))
            await _until(pilot, lambda: app.ws.current() is None or app.ws.current().item_id != third)
            assert app.ws.decisions_session == 3

    try:
        asyncio.run(run())
    finally:
        srv.stop()
    rows = _decisions(d)
    assert [r["kind"] for r in rows] == ["label"] * 3
    assert len({r["item_id"] for r in rows}) == 3 and len({r["client_msg_id"] for r in rows}) == 3


def test_quitting_with_a_decision_held_asks_first_and_says_it_was_not_stored(tmp_path):
    d = project_copy(tmp_path)
    srv = Server(d, compute="thread")
    srv.start()

    async def run():
        app = LabelApp(d)
        async with app.run_test(size=(80, 24)) as pilot:
            srv.stop()
            await pilot.press(_key_for(app, app.ws.current().item_id))
            await _until(pilot, lambda: app.link.down_for() is not None)
            await pilot.press("q")
            await pilot.pause(0.2)
            assert app.is_running and app.link.held == 1  # the first q warns
            await pilot.press("q")
            await pilot.pause(0.2)
        return app

    app = asyncio.run(run())
    assert app.unsent == 1
    assert _decisions(d) == []  # nothing half-stored; the annotator was told twice


def test_the_done_counter_counts_a_decision_resent_after_a_restart_once(tmp_path):
    """The server stored a decision and stopped before answering; the workstation sends it again to the
    restarted server: stored once, and 'done N this session' counts it once."""
    import uuid

    from labelloop.core.api.client import LocalClient
    from labelloop.core.api.service import Service

    d = project_copy(tmp_path)
    svc = Service(d, compute="thread")
    c = LocalClient(svc, "alice")
    session = c.call("open_session", client="test")["session"]
    item = c.call("next", session=session)["item"]
    msg = uuid.uuid4().hex
    args = dict(item_id=item["item_id"], action="label", labels=[TRUTH[item["item_id"]]], msg_id=msg, session=session)
    assert c.call("decide", **args)["done_session"] == 1  # stored; pretend the answer was lost
    svc.close()
    svc = Service(d, compute="thread")  # the restarted server
    try:
        again = LocalClient(svc, "alice").call("decide", **args)
        assert again["duplicate"] is True and again["done_session"] == 1
        nxt = again["item"]
        third = LocalClient(svc, "alice").call(
            "decide",
            item_id=nxt["item_id"],
            action="label",
            labels=[TRUTH[nxt["item_id"]]],
            msg_id=uuid.uuid4().hex,
            session=session,
            lease=nxt.get("lease"),
        )
        assert third["done_session"] == 2
    finally:
        svc.close()
    assert len(_decisions(d)) == 2
