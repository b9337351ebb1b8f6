"""The workstation driven by real key presses (Textual Pilot), then read back from the store."""

from __future__ import annotations

import json

import pytest

from labelloop.core.store.project import Project
from labelloop.tui.app import LabelApp
from tests.conftest import write_csv
from tests.tui_helpers import TRUTH, build_project, press_decisions, project_copy


def events(d, where="TRUE"):
    with Project.open(d) as p:
        return p.store.dicts(
            f"SELECT * FROM events WHERE via IS DISTINCT FROM 'import' AND actor <> 'seed-annotator' "
            f"AND {where} ORDER BY event_id"
        )


async def _settle(pilot, app, timeout=30.0):
    waited = 0.0
    await pilot.pause(0.05)
    while app.retraining and waited < timeout:
        await pilot.pause(0.1)
        waited += 0.1


@pytest.fixture
def proj(tmp_path):
    return project_copy(tmp_path)


async def test_label_key_records_the_label_with_context(proj, open_app):
    app = open_app(proj)
    async with app.run_test(size=(120, 40)) as pilot:
        first = app.ws.current()
        assert first.probs and first.model_version == 1
        await pilot.press({"ham": "1", "spam": "2"}[first.suggestion])  # the suggestion's own label key
        second = app.ws.current()
        assert second.item_id != first.item_id
    app.ws.close()
    ev = events(proj)
    assert len(ev) == 1
    e = ev[0]
    assert (e["item_id"], e["kind"], e["labels"], e["actor"]) == (
        first.item_id,
        "label",
        [first.suggestion],
        open_app.actor,
    )
    assert e["via"] in ("key", "key-agrees") and e["duration_ms"] > 0
    assert e["model_version"] == 1 and e["batch_id"] == first.batch_id and e["strategy"] == first.strategy
    assert json.loads(e["shown_probs"]) == pytest.approx(first.probs) and e["suggestion"] == first.suggestion
    assert e["suggestion_hidden"] is False and e["rank"] == first.rank


async def test_accept_takes_the_suggestion(proj, open_app):
    app = open_app(proj)
    async with app.run_test(size=(120, 40)) as pilot:
        item = app.ws.current()
        await press_decisions(pilot, app, "enter")
    app.ws.close()
    e = events(proj)[0]
    assert (e["item_id"], e["via"], e["labels"]) == (item.item_id, "accept", [item.suggestion])


async def test_reject_with_reason_in_two_keys_and_with_a_note(proj, open_app):
    app = open_app(proj)
    async with app.run_test(size=(120, 40)) as pilot:
        a = app.ws.current()
        await pilot.press("x", "4")  # binary: the right label is the other one
        b = app.ws.current()
        await pilot.press("x", "n", *"spam words", "enter", "1")
    app.ws.close()
    e1, e2 = events(proj)
    other = {"ham": "spam", "spam": "ham"}
    assert (e1["item_id"], e1["via"], e1["labels"], e1["error_category"], e1["note"]) == (
        a.item_id,
        "correction",
        [other[a.suggestion]],
        "out of distribution",
        None,
    )
    assert e1["suggestion"] == a.suggestion
    assert (e2["item_id"], e2["labels"], e2["error_category"], e2["note"]) == (
        b.item_id,
        [other[b.suggestion]],
        "wrong class",
        "spam words",
    )


async def test_escape_cancels_a_correction(proj, open_app):
    app = open_app(proj)
    async with app.run_test(size=(120, 40)) as pilot:
        a = app.ws.current()
        await pilot.press("x", "escape")
        assert app.ws.current().item_id == a.item_id
    app.ws.close()
    assert events(proj) == []


async def test_skip_and_flag(proj, open_app):
    app = open_app(proj)
    async with app.run_test(size=(120, 40)) as pilot:
        a = app.ws.current()
        await pilot.press("s", *"unclear")
        await press_decisions(pilot, app, "enter")
        b = app.ws.current()
        await pilot.press("f")
        await press_decisions(pilot, app, "enter")
    app.ws.close()
    e1, e2 = events(proj)
    assert (e1["item_id"], e1["kind"], e1["note"]) == (a.item_id, "skip", "unclear")
    assert (e2["item_id"], e2["kind"], e2["note"]) == (b.item_id, "flag", None)


async def test_undo_several_deep(proj, open_app):
    app = open_app(proj)
    async with app.run_test(size=(120, 40)) as pilot:
        shown = []
        for key in ("1", "2", "enter"):
            shown.append(app.ws.current().item_id)
            await press_decisions(pilot, app, key)
        await press_decisions(pilot, app, "u", "backspace", "u")
        assert app.ws.current().item_id == shown[0]
        await press_decisions(pilot, app, "u")  # nothing left of alice's to undo
        await press_decisions(pilot, app, "2")  # relabel the first item
    app.ws.close()
    ev = events(proj)
    decisions = [e for e in ev if e["kind"] == "label"]
    undos = [e for e in ev if e["kind"] == "undo"]
    assert [u["target_event"] for u in undos] == [
        decisions[2]["event_id"],
        decisions[1]["event_id"],
        decisions[0]["event_id"],
    ]
    assert [u["item_id"] for u in undos] == shown[::-1]
    with Project.open(proj) as p:
        final = dict(p.store.rows("SELECT item_id, labels FROM final_labels WHERE item_id IN (?, ?, ?)", shown))
    assert final == {shown[0]: ["spam"]}  # only the relabel stands


async def test_resume_after_restart(proj, open_app):
    app = open_app(proj)
    async with app.run_test(size=(120, 40)) as pilot:
        await press_decisions(pilot, app, "1", "1", "1")
        nxt = app.ws.current().item_id
    app.ws.close()
    app2 = open_app(proj)
    async with app2.run_test(size=(120, 40)):
        assert app2.ws.current().item_id == nxt
        assert app2.ws.queue_length() == app.ws.queue_length()
    app2.ws.close()
    assert len(events(proj)) == 3


async def test_retrain_while_labelling(proj, monkeypatch, tmp_path):
    """The retrain trains in its own process (held there by a fault point until the test has labelled
    meanwhile); labelling goes on, and the new batch arrives after."""
    marker = tmp_path / "reached"
    monkeypatch.setenv("LABELLOOP_FAULT", "compute-round")
    monkeypatch.setenv("LABELLOOP_FAULT_MARKER", str(marker))
    monkeypatch.setenv("LABELLOOP_FAULT_SLEEP", "2")
    app = LabelApp(proj, actor="alice")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("t")
        assert app.retraining
        for _ in range(1200):  # the child process has started computing (its imports: seconds under load)
            if marker.exists():
                break
            await pilot.pause(0.05)
        assert marker.exists() and app.ws.service.retrainer.executor is not None
        await pilot.press("1", "2")  # labelling goes on during the retrain
        assert app.retraining and len(events(proj)) == 2
        on_screen = app.ws.current()
        await _settle(pilot, app)
        assert not app.retraining
        assert app.last_report is not None and app.last_report.model_version == 2
        # the item being read stays until it is decided; the one after it comes from the new batch
        assert app.ws.current() is on_screen and on_screen.model_version == 1
        await pilot.press("1")
        after = app.ws.current()
        assert after.model_version == 2 and after.batch_id == app.last_report.batch_id
        await pilot.press("1")
    app.ws.close()
    ev = events(proj)
    assert len(ev) == 4 and ev[2]["item_id"] == on_screen.item_id and ev[2]["model_version"] == 1
    assert ev[3]["model_version"] == 2
    with Project.open(proj) as p:
        assert p.store.scalar("SELECT n_train FROM models WHERE version = 2") >= 40


async def test_auto_retrain_every_n_decisions(tmp_path, open_app):
    d = project_copy(tmp_path, "auto", cfg_edits=(), trained=True)
    text = (d / "labelloop.toml").read_text().replace("retrain_every = 0", "retrain_every = 3")
    (d / "labelloop.toml").write_text(text)
    app = open_app(d)
    async with app.run_test(size=(120, 40)) as pilot:
        await press_decisions(pilot, app, "1", "1")
        assert not app.retraining and app.last_report is None
        await press_decisions(pilot, app, "1")  # the third label starts a retrain by itself
        await _settle(pilot, app)
        assert app.last_report is not None and app.last_report.model_version == 2
    app.ws.close()
    with Project.open(d) as p:
        assert p.store.scalar("SELECT max(version) FROM models") == 2


async def test_blind_items_hide_the_suggestion(tmp_path, open_app):
    d = project_copy(tmp_path, "blind", cfg_edits=(("blind_share = 0.0", "blind_share = 1.0"),))
    app = open_app(d)
    async with app.run_test(size=(120, 40)) as pilot:
        item = app.ws.current()
        assert item.suggestion_hidden
        assert "Suggestion hidden" in str(app.query_one("#suggestion").render())
        await pilot.press("enter")  # nothing to accept
        assert app.ws.current().item_id == item.item_id
        await press_decisions(pilot, app, "1")
    app.ws.close()
    e = events(d)[0]
    assert e["suggestion_hidden"] is True and e["suggestion"] is None and e["shown_probs"] is None
    assert e["labels"] == ["ham"]


async def test_remapped_keys(tmp_path, open_app):
    d = project_copy(tmp_path, "remap", cfg_edits=(("[keys]\n", '[keys]\ncorrection = "r"\nskip = "k"\n'),))
    app = open_app(d)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("r", "2")
        await pilot.press("k", "enter")
    app.ws.close()
    kinds = [(e["kind"], e["via"]) for e in events(d)]
    assert kinds == [("label", "correction"), ("skip", None)]


HOSTILE = [
    ["h-ansi", "red \x1b[31mALERT\x1b[0m and a bell \x07 and \x1b]0;pwned\x07 title"],
    ["h-markup", "[bold]not bold[/bold] [@click=app.quit]click me[/] [link=http://x]x[/link]"],
    ["h-rtl", "مرحبا بالعالم \u202eevil\u202c — שלום"],
    ["h-emoji", "👩🏽‍💻🎉 " * 200],
    ["h-longline", "x" * 50_000],
    ["h-huge", "word " * 200_000],
]


async def test_hostile_text_is_shown_not_interpreted(tmp_path, open_app):
    d = build_project(
        tmp_path / "hostile",
        n_pool=0,
        n_test=20,
        trained=False,
        extra_rows=HOSTILE,
        cfg_edits=(("max_text_chars = 100000", "max_text_chars = 2000000"),),
    )
    app = open_app(d)
    seen = {}
    async with app.run_test(size=(80, 24)) as pilot:
        for _ in range(len(HOSTILE)):
            item = app.ws.current()
            rendered = app.query_one("#item-text").render()
            plain = getattr(rendered, "plain", str(rendered))
            seen[item.item_id] = plain
            await press_decisions(pilot, app, "1")
        assert app.is_running  # nothing in the texts quit or broke the app
    app.ws.close()
    assert "\x1b" not in seen["h-ansi"] and "\x07" not in seen["h-ansi"] and "␛[31m" in seen["h-ansi"]
    assert "[bold]not bold[/bold]" in seen["h-markup"] and "[@click=app.quit]" in seen["h-markup"]
    assert "<U+202E>" in seen["h-rtl"] and "مرحبا" in seen["h-rtl"]
    assert "first 20,000 of 1,000,000 characters" in seen["h-huge"]
    assert len(events(d)) == len(HOSTILE)
    with Project.open(d) as p:  # the stored text is untouched
        assert p.store.scalar("SELECT text FROM items WHERE id = 'h-ansi'") == HOSTILE[0][1]


async def test_multi_label_toggle_then_enter(tmp_path, open_app):
    from labelloop.core.loop.al_round import train_and_queue
    from labelloop.core.store.imports import import_file
    from labelloop.core.store.project import init_project

    d = init_project(tmp_path / "ml", ["sports", "politics", "tech"], multi_label=True)
    write_csv(tmp_path / "ml.csv", ["id", "text"], [[f"m{i}", f"item number {i}"] for i in range(10)])
    with Project.open(d) as p:
        import_file(p, tmp_path / "ml.csv", id_col="id")
        train_and_queue(p, seed=0)
    app = open_app(d)
    async with app.run_test(size=(120, 40)) as pilot:
        item = app.ws.current()
        await pilot.press("1", "3", "1", "2", "enter")  # sports on, tech on, sports off, politics on
    app.ws.close()
    e = events(d)[0]
    assert (e["item_id"], e["labels"]) == (item.item_id, ["politics", "tech"])


async def test_help_and_metrics_screens_open(proj, open_app):
    app = open_app(proj)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("question_mark")
        assert type(app.screen).__name__ == "HelpScreen"
        await pilot.press("escape", "m")
        assert type(app.screen).__name__ == "MetricsScreen"
        for _ in range(100):
            await pilot.pause(0.1)
            if "computing" not in str(app.screen.query_one("#numbers").render()):
                break
        text = str(app.screen.query_one("#numbers").render())
        assert "Model v1" in text and "ECE" in text
        await pilot.press("escape")
        assert type(app.screen).__name__ == "Screen"
    app.ws.close()


def test_workspace_api_for_scripts(tmp_path):
    """The same operations the workstation uses, from a script: next, label, undo, retrain, metrics."""
    from labelloop.core.api.workspace import Workspace

    d = project_copy(tmp_path)
    ws = Workspace(d, actor="script")
    nxt = ws.next_items(3)
    assert len(nxt) == 3 and nxt[0].item_id == ws.current().item_id and nxt[0].why.startswith("margin, rank 1")
    for it in nxt:
        ws.label(it, [TRUTH[it.item_id]], duration_ms=100.0)
    back = ws.undo()
    assert back.item_id == nxt[2].item_id == ws.current().item_id  # the undone item comes back first
    ws.label(back, [TRUTH[back.item_id]])
    shown = ws.current()
    r = ws.retrain(seed=3)
    assert r.model_version == 2 and r.n_train == 43
    assert ws.current() is shown and shown.model_version == 1  # the current item stays until decided
    ws.label(shown, [TRUTH[shown.item_id]])
    assert ws.current().model_version == 2
    m = ws.metrics()["snapshot"]
    assert [c["n_train"] for c in m["curve"]] == [40, 43] and m["distribution"]
    a = m["arms"]  # the seed batch: 36 cold-start picks and 4 random-audit items; then 4 decisions
    assert (a["cold_start"], a["total"], a["al"] + a["audit"]) == (36, 44, 8) and a["audit"] >= 4
    ws.close()


async def test_no_color_is_respected(proj, monkeypatch, open_app):
    monkeypatch.setenv("NO_COLOR", "1")
    app = open_app(proj)
    async with app.run_test(size=(80, 24)) as pilot:
        assert app.no_color
        await press_decisions(pilot, app, "1")
    app.ws.close()
    assert len(events(proj)) == 1


async def test_a_new_batch_from_someone_elses_retrain_is_announced(tmp_path):
    """Team mode: another session (here a script on the socket) retrains; the workstation says so
    and keeps the item in hand."""
    from labelloop.core.api.client import SOCKET_NAME, SocketClient
    from labelloop.core.api.server import Server

    d = project_copy(tmp_path)
    srv = Server(d, compute="thread")
    srv.start()
    try:
        app = LabelApp(d)
        async with app.run_test(size=(120, 40)) as pilot:
            shown = app.ws.current()
            other = SocketClient(d / SOCKET_NAME)
            job = other.call("retrain_start", why="someone else")["job"]
            while other.call("retrain_poll", job=job["id"])["job"]["running"]:
                await pilot.pause(0.1)
            for _ in range(60):  # the workstation polls every 2 s while idle
                if app.last_report is not None:
                    break
                await pilot.pause(0.1)
            assert app.last_report is not None and app.last_report.model_version == 2
            assert app.ws.current() is shown and not app.retraining
            other.close()
        app.ws.close()
    finally:
        srv.stop()


@pytest.mark.parametrize("size", [(80, 24), (60, 20)])
async def test_metrics_pane_scrolls_to_the_warnings_on_a_small_terminal(proj, open_app, size):
    """At 80x24 and 60x20 the charts, the AL-vs-random lines and the warnings do not fit: the pane
    scrolls (keyboard), and the summary line (AL vs random, ECE, warnings) stays on top."""
    app = open_app(proj)
    async with app.run_test(size=size) as pilot:
        summary = str(app.screen.query_one("#summary").render())
        assert summary.startswith("Is AL working?") and "warnings" in summary and len(summary) <= size[0] - 2
        # whole phrases only: what does not fit is left to the metrics pane ("… m"), never cut mid-phrase
        shown = summary.removeprefix("Is AL working? ").removesuffix(" · … m").split(" · ")
        assert all(any(full.startswith(part) for full in app.ws.summary.split(" · ")) for part in shown), summary
        assert "ECE" in summary or summary.endswith("… m")
        await pilot.press("m")
        assert type(app.screen).__name__ == "MetricsScreen"
        for _ in range(100):
            await pilot.pause(0.1)
            if "computing" not in str(app.screen.query_one("#numbers").render()):
                break
        head = str(app.screen.query_one("#metrics-summary").render())
        assert head.startswith("Is AL working?") and "of 6 warnings" in head
        # the 2 s poll and a finished retrain update the labelling screen under the metrics pane
        # (they once looked for its widgets in the top screen and crashed the app)
        app.update_progress()
        app.show_item()
        scroll = app.screen.query_one("#metrics-scroll")
        assert scroll.max_scroll_y > 0
        await pilot.press("end")
        await pilot.pause(0.2)
        assert scroll.scroll_y == scroll.max_scroll_y
        numbers = str(app.screen.query_one("#numbers").render())
        assert "AL vs random audit at equal budget" in numbers and "Warnings" in numbers
        # the numbers' last line is inside the visible region after scrolling to the end
        region = app.screen.query_one("#numbers").region
        assert region.bottom <= scroll.region.bottom + 1
        await pilot.press("escape")
    app.ws.close()


async def test_a_poll_that_fires_while_the_app_closes_does_not_crash_it(proj, open_app):
    """The 2 s poll once fired during the app's teardown under load, looked for the status bar that
    was already gone and ended the session with a traceback (NoMatches)."""
    app = open_app(proj)
    async with app.run_test(size=(80, 24)):
        await app.screen_stack[0].query_one("#status").remove()
        app._poll_count = 7  # the next poll is not skipped
        app._poll()  # must not raise
    app.ws.close()
