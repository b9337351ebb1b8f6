"""The labelling screen at 80x24, state by state: the footer offers the keys that work in that state,
dialogs show how to leave them, and notices never cover the item text or the label bar."""

from __future__ import annotations

from labelloop.tui.app import LabelApp
from tests.tui_helpers import project_copy


def footer(app) -> list[str]:
    from textual.widgets._footer import FooterKey

    return [k.description for k in app.screen.query(FooterKey) if k.display]


def overlaps(a, b) -> bool:
    return a.x < b.x + b.width and b.x < a.x + a.width and a.y < b.y + b.height and b.y < a.y + a.height


async def test_the_footer_offers_accept_and_correct_only_with_a_suggestion(tmp_path):
    cold = LabelApp(project_copy(tmp_path / "cold", key="cold", trained=False), actor="alice")
    async with cold.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert not cold.ws.current().probs  # the cold start: no model, no suggestion
        keys = footer(cold)
        assert "Accept" not in keys and "Correct" not in keys and {"Skip", "Flag", "Undo"} <= set(keys)
    cold.ws.close()
    warm = LabelApp(project_copy(tmp_path / "warm"), actor="alice")
    async with warm.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert warm.ws.current().suggestion
        assert {"Accept", "Correct", "Skip"} <= set(footer(warm))
        for key in ("s", "f", "x"):  # skip, flag, correct: each dialog says how to leave it
            await pilot.press(key)
            await pilot.pause()
            assert "Cancel" in footer(warm), (key, footer(warm))
            await pilot.press("escape")
            await pilot.pause()
    warm.ws.close()


async def test_notices_stay_in_their_line_and_merge(tmp_path):
    app = LabelApp(project_copy(tmp_path), actor="alice")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        for k in range(3):  # a retrain's model line and two warnings arrive together
            app.toast(f"notice number {k}", severity="warning" if k else "information", timeout=5)
        await pilot.pause()
        notice = app.query_one("#notice")
        line = str(notice.render())
        assert "notice number 2" in line and "(+2 more)" in line
        for other in ("#text-scroll", "#labelbar", "#why", "#suggestion"):
            assert not overlaps(notice.region, app.query_one(other).region), other
        assert not app._notifications  # nothing floats over the screen
    app.ws.close()


def test_the_summary_line_keeps_whole_phrases():
    from labelloop.tui.panes import fit_summary

    s = "v1 · 1 of 6 warnings (batches_converging) · ECE 0.059 · AL vs random +0.012 [-0.01, +0.03] at 100 labels"
    line = fit_summary(s, 78)
    assert len(line) <= 78 and line.endswith("· … m") and "ECE 0.059" in line and "AL vs" not in line
    assert fit_summary(s, 200) == "Is AL working? " + s
    assert len(fit_summary(s, 20)) <= 20


async def test_the_metrics_pane_says_the_numbers_are_below(tmp_path):
    app = LabelApp(project_copy(tmp_path), actor="alice")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("m")
        await pilot.pause(0.5)
        assert "Numbers & warnings ↓" in footer(app)
        await pilot.press("n")
        await pilot.pause(0.2)
        scroll = app.screen.query_one("#metrics-scroll")
        assert scroll.scroll_y == scroll.max_scroll_y > 0
    app.ws.close()


async def test_a_fresh_project_says_it_is_preparing_and_a_key_pressed_meanwhile_is_not_lost_silently(tmp_path):
    """A fresh project (no batch yet): the text pane says the first batch is being prepared, a label key
    pressed before the first item shows does nothing and says so; then the first item comes."""
    from labelloop.core.store.imports import import_file
    from labelloop.core.store.project import Project, init_project
    from tests.conftest import ROOT

    d = init_project(tmp_path / "fresh", ["ham", "spam"])
    # a typicality cold start needs the features first (a random or keyword one is chosen from the ids
    # alone, in milliseconds: bench/bench_first_item.py)
    cfg = d / "labelloop.toml"
    cfg.write_text(cfg.read_text().replace('cold_start = "random"', 'cold_start = "typicality"'))
    with Project.open(d) as p:
        import_file(p, ROOT / "sample_data" / "sms_spam.csv", id_col="id")
    app = LabelApp(d, actor="alice", retrain_in_process=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        # (building the features of 5,574 items takes seconds: the first item cannot be there yet)
        assert app.ws.current() is None
        assert "Preparing the first batch" in str(app.query_one("#item-text").render())
        await pilot.press("1")
        assert "No item on screen yet: that key did nothing." in app.notice_log
        for _ in range(600):
            if app.ws.current() is not None:
                break
            await pilot.pause(0.05)
        assert app.ws.current() is not None
    app.ws.close()
    with Project.open(d) as p:
        assert p.store.scalar("SELECT count(*) FROM event_log WHERE kind = 'label'") == 0
