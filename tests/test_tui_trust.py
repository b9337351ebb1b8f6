"""Trusting the workstation (issue 8), through the real app: Pilot key presses read back from the store,
and the raw bytes the app writes to a real terminal (a pty)."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import sys
import termios
import time
from pathlib import Path

from labelloop.core.config import CONFIG_NAME
from labelloop.core.loop.al_round import train_and_queue
from labelloop.core.store.imports import import_file
from labelloop.core.store.project import Project, init_project
from labelloop.tui.app import EXIT_STORE_FAILED, LabelApp
from labelloop.tui.screens import CorrectionScreen, FatalScreen
from tests.conftest import ROOT, write_csv
from tests.tui_helpers import SAMPLE, TRUTH, press_decisions, project_copy


def stored(d, where="TRUE"):
    with Project.open(d) as p:
        return p.store.dicts(f"""SELECT * FROM events WHERE via IS DISTINCT FROM 'import' AND actor <> 'seed-annotator'
                                 AND {where} ORDER BY event_id""")


async def wait_retrain(pilot, app, timeout=60.0):
    waited = 0.0
    await pilot.pause()
    while app.retraining and waited < timeout:
        await pilot.pause(0.05)
        waited += 0.05


def default_project(tmp_path: Path, n_pool: int = 900) -> Path:
    """A project with labelloop init's defaults: batch 50, retrain every 25, audit share 0.10,
    random cold start of 50."""
    d = init_project(tmp_path / "proj", ["ham", "spam"], name="defaults")
    pool = [r for r in SAMPLE if r["split"] == "pool"][:n_pool]
    test = [r for r in SAMPLE if r["split"] == "test"][:300]
    write_csv(tmp_path / "pool.csv", ["id", "text"], [[r["id"], r["text"]] for r in pool])
    write_csv(
        tmp_path / "test.csv",
        ["id", "text", "label", "split"],
        [[r["id"], r["text"], r["label"], "test"] for r in test],
    )
    with Project.open(d) as p:
        assert (p.config.batch_size, p.config.retrain_every, p.config.audit_share) == (50, 25, 0.10)
        import_file(p, tmp_path / "pool.csv", id_col="id")
        import_file(p, tmp_path / "test.csv", id_col="id", label_col="label", split_col="split")
        train_and_queue(p, seed=0)
    return d


# --- acceptance: the control arm gets its share, through the real workstation ------------------------


async def test_two_hundred_items_at_default_settings_give_the_audit_arm_its_share(tmp_path, open_app):
    d = default_project(tmp_path)
    app = open_app(d)
    async with app.run_test(size=(120, 40)) as pilot:
        for _ in range(200):
            item = app.ws.current()
            assert item is not None
            await press_decisions(pilot, app, {"ham": "1", "spam": "2"}[TRUTH[item.item_id]])
            # a person takes seconds per item, a retrain on this pool a fraction of one: let it land
            await wait_retrain(pilot, app)
    app.ws.close()
    ev = stored(d)
    assert len(ev) == 200 and all(e["kind"] == "label" for e in ev)
    share = sum(bool(e["audit"]) for e in ev) / len(ev)
    assert 0.05 <= share <= 0.15, share
    with Project.open(d) as p:
        # the background retrains really ran, every 25 decisions: 8 cadence points in 200 labels, each a
        # new batch; the first (25 labels, inside the random cold start of 50) trains no model, so a
        # quiet machine gives 9 batches and 7 models (n_train 50, 75, ..., 200). One point may land
        # after the last read on a loaded machine (seen once in CI under load): allow one.
        batches = p.store.scalar("SELECT count(*) FROM batches")
        retrains = p.store.scalar("SELECT count(*) FROM models")
        assert batches >= 8 and retrains >= 6, (batches, retrains)
        from labelloop.core.loop.metrics import arm_counts

        arms = arm_counts(p)
        assert arms["audit"] == sum(bool(e["audit"]) for e in ev) and arms["total"] == 200


async def test_the_item_on_screen_does_not_change_when_a_retrain_lands(tmp_path, open_app):
    d = project_copy(tmp_path)
    app = open_app(d)
    async with app.run_test(size=(120, 40)) as pilot:
        await press_decisions(pilot, app, "1", "2")
        shown = app.ws.current()
        text_before = str(app.query_one("#item-text").render())
        app.start_retrain("test")
        await wait_retrain(pilot, app)
        assert app.last_report is not None and app.last_report.model_version == 2
        assert app.ws.current() is shown
        assert str(app.query_one("#item-text").render()) == text_before
        progress = str(app.query_one("#progress").render())
        assert "majority" in progress and "acc" in progress  # accuracy beside the majority-class baseline
        await press_decisions(pilot, app, "1")  # the key decides the item that was read
        nxt = app.ws.current()
    app.ws.close()
    ev = stored(d)
    assert ev[-1]["item_id"] == shown.item_id and ev[-1]["batch_id"] == shown.batch_id
    assert nxt.model_version == 2


# --- 3. a label key that differs from the suggestion -------------------------------------------------


async def test_label_key_against_the_suggestion_is_a_correction(tmp_path):
    d = project_copy(tmp_path)
    app = LabelApp(d, actor="alice")
    async with app.run_test(size=(120, 40)) as pilot:
        item = app.ws.current()
        other = [lab for lab in app.ws.config.labels if lab != item.suggestion][0]
        await pilot.press(app.ws.config.label_keys[other])
        agree = app.ws.current()
        await pilot.press(app.ws.config.label_keys[agree.suggestion])
    app.ws.close()
    e1, e2 = stored(d)
    assert (e1["via"], e1["error_category"], e1["labels"], e1["suggestion"]) == (
        "correction",
        "unspecified",
        [other],
        item.suggestion,
    )
    assert (e2["via"], e2["error_category"]) == ("key-agrees", None)


async def test_ask_reason_opens_the_reason_picker_with_the_label_chosen(tmp_path):
    d = project_copy(tmp_path)
    cfg = d / CONFIG_NAME
    cfg.write_text(cfg.read_text().replace("ask_reason = false", "ask_reason = true"))
    app = LabelApp(d, actor="alice")
    async with app.run_test(size=(120, 40)) as pilot:
        item = app.ws.current()
        other = [lab for lab in app.ws.config.labels if lab != item.suggestion][0]
        await pilot.press(app.ws.config.label_keys[other])
        assert isinstance(app.screen, CorrectionScreen) and app.screen.labels == [other]
        await pilot.press("n")
        await pilot.press(*"both fit")
        await pilot.press("enter")
        await pilot.press("2")  # "ambiguous"
        await pilot.pause()
        assert app.ws.current() is not item
    app.ws.close()
    e = stored(d)[0]
    assert (e["item_id"], e["via"], e["labels"], e["error_category"], e["note"]) == (
        item.item_id,
        "correction",
        [other],
        "ambiguous",
        "both fit",
    )


# --- 5. hostile ids, labels and config on screen -------------------------------------------------------


def hostile_project(tmp_path: Path, labels=("x[/]", "spam")) -> Path:
    d = init_project(tmp_path / "proj", list(labels), name="[bold]name[/bold]\x1b]0;T\x07")
    cfg = d / CONFIG_NAME
    text = cfg.read_text().replace("retrain_every = 25", "retrain_every = 0").replace("seed_size = 50", "seed_size = 6")
    # keyword seeding on the hostile texts puts every hostile id in the first batch
    text = text.replace('cold_start = "random"', 'cold_start = "keyword"').replace(
        'seed_query = ""', 'seed_query = "hostile"'
    )
    text = text.replace(
        'reasons = ["wrong class"', 'reasons = ["[red]bad[/red]\\u001b]52;c;SGVsbG8=\\u0007", "wrong class"'
    )
    cfg.write_text(text)
    (d / "guidelines.md").write_text(
        "# Rules\n\x1b]52;c;SGVsbG8=\x07 clipboard\n\x1b]0;PWNED\x07 title\n"
        "\x1b[2J clear\n[@click=app.quit]click me[/]\n",
        encoding="utf-8",
    )
    ids = ["reddit[/r/python]1", "[@click=app.quit]q[/]", "plain\x1b[31mred", "a\u202eb"]
    rows = [[i, f"hostile id item {n} \x1b]0;PWNED\x07 [bold]x[/bold]"] for n, i in enumerate(ids)]
    rows += [[f"n{i}", f"normal text {i}"] for i in range(60)]
    write_csv(tmp_path / "pool.csv", ["id", "text"], rows)
    with Project.open(d) as p:
        import_file(p, tmp_path / "pool.csv", id_col="id")
        p.store.con.execute("SELECT 1")
    with Project.open(d) as p:
        train_and_queue(p, seed=0, batch_size=24)
    return d


async def test_hostile_ids_and_labels_never_crash_or_act(tmp_path):
    d = hostile_project(tmp_path)
    app = LabelApp(d, actor="alice")
    async with app.run_test(size=(120, 40)) as pilot:
        seen = set()
        for _ in range(24):
            item = app.ws.current()
            seen.add(item.item_id)
            await pilot.press("2")
            await pilot.press("u")  # the undo toast names the id
            await pilot.pause()
            assert app.is_running
            await pilot.press("2")
        assert {"reddit[/r/python]1", "[@click=app.quit]q[/]", "plain\x1b[31mred", "a\u202eb"} <= seen
        await pilot.press("question_mark")  # guidelines with escapes and markup
        await pilot.pause()
        await pilot.press("escape")
        app.start_retrain("hostile labels in warnings")  # seed adequacy warning names 'x[/]'
        await wait_retrain(pilot, app)
        await pilot.press("m")
        await pilot.pause(0.5)
        assert app.is_running
    app.ws.close()
    # every notice is plain text (the notice line is a Static of Text, never markup): the ids and the
    # label 'x[/]' appear literally, never as markup or links
    toasts = [(m, False) for m in app.notice_log]
    assert toasts
    assert any("[@click=app.quit]q[/]" in m for m, _ in toasts) and any("reddit[/r/python]1" in m for m, _ in toasts)
    assert any("x[/]" in m for m, _ in toasts)  # the seed-adequacy warning names the label
    assert all("\x1b" not in m for m, _ in toasts) and any("\u241b" in m for m, _ in toasts)
    ev = stored(d, "kind = 'label'")
    assert len([e for e in ev]) == 48 and {e["item_id"] for e in ev} >= {"reddit[/r/python]1", "[@click=app.quit]q[/]"}
    with Project.open(d) as p:  # the stored text is unchanged
        assert p.store.scalar("SELECT text FROM items WHERE id = 'plain\x1b[31mred'").startswith(
            "hostile id item 2 \x1b]0;"
        )


# --- the bytes a real terminal receives --------------------------------------------------------------


def run_in_pty(
    args: list[str], keys: list[tuple[float, bytes]], *, env: dict | None = None, timeout: float = 60.0, size=(120, 40)
) -> tuple[bytes, int]:
    """Run labelloop in a pseudo-terminal, type ``keys`` (delay, bytes), return (every byte written, exit code)."""
    pid, fd = pty.fork()
    if pid == 0:  # child
        # the window size is set here, before the app starts (set by the parent after the fork, a
        # child that started first under load read the default 80x24)
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
        os.chdir(ROOT)
        e = dict(os.environ, TERM="xterm-256color", **(env or {}))
        e.pop("NO_COLOR", None)
        os.execve(sys.executable, [sys.executable, "-m", "labelloop.tui.cli", *args], e)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
    out = bytearray()
    start = time.time()
    pending = list(keys)
    next_at = None  # the first key's delay counts from when the screen is up (a loaded machine is slow)
    sent_at = 0
    status = None
    while time.time() - start < timeout:
        r, _, _ = select.select([fd], [], [], 0.05)
        if r:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            out += chunk
        if next_at is None and pending and (b"this session" in out or time.time() - start > timeout / 2):
            next_at = time.time() + pending[0][0]
        # a key may wait for what the one before it should have drawn (keys[i][2]: bytes on screen)
        shown = len(pending[0]) < 3 or pending[0][2] in out[sent_at:] if pending else False
        if pending and next_at is not None and time.time() >= next_at and (shown or time.time() - start > timeout / 2):
            sent_at = len(out)
            os.write(fd, pending.pop(0)[1])
            if pending:
                next_at = time.time() + pending[0][0]
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = st
            try:
                while True:
                    r, _, _ = select.select([fd], [], [], 0.2)
                    if not r:
                        break
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        break
                    out += chunk
            except OSError:
                pass
            break
    if status is None:
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    os.close(fd)
    return bytes(out), os.waitstatus_to_exitcode(status)


def test_guidelines_taxonomy_and_ids_reach_the_terminal_as_text(tmp_path):
    d = hostile_project(tmp_path)
    # open help (guidelines), close it; reject (taxonomy reasons), cancel; label, undo (toast with id); quit
    keys = [
        (3.0, b"?"),
        (1.5, b"\x1b", b"clipboard"),
        (1.0, b"x"),
        (1.0, b"\x1b"),
        (1.0, b"2"),
        (0.5, b"u"),
        (1.5, b"q"),
    ]
    out, code = run_in_pty(["label", str(d)], keys)
    assert code == 0, out[-2000:]
    for raw in (b"\x1b]52;c;SGVsbG8", b"\x1b]0;PWNED", b"\x1b]0;T\x07", b"[31mred", b"\xe2\x80\xae"):
        assert raw not in out, raw
    # what was there is shown visibly instead (␛ is U+241B)
    assert "\u241b]52;c;SGVsbG8=".encode() in out
    assert b"Traceback" not in out


def test_store_failure_in_a_real_terminal_exits_3_with_one_sentence(tmp_path):
    d = project_copy(tmp_path)
    env = {"LABELLOOP_FAULT": "store-append", "LABELLOOP_FAULT_AFTER": "3"}
    keys = [(3.0, b"1"), (0.3, b"1"), (0.3, b"2"), (0.3, b"1"), (0.5, b"1"), (0.5, b"2"), (1.0, b"q"), (1.0, b" ")]
    out, code = run_in_pty(["label", str(d)], keys, env=env)
    assert code == EXIT_STORE_FAILED
    assert b"Traceback" not in out
    assert b"No space left on device" in out and b"every decision before it is saved" in out
    assert len(stored(d)) == 3
    assert not [p for p in d.rglob("*.tmp*")]


async def test_store_failure_stops_the_keys_and_keeps_what_was_saved(tmp_path, monkeypatch):
    d = project_copy(tmp_path)
    monkeypatch.setenv("LABELLOOP_FAULT", "store-append")
    monkeypatch.setenv("LABELLOOP_FAULT_AFTER", "2")
    import labelloop.core.util.faults

    monkeypatch.setattr(labelloop.core.util.faults, "_calls", {})
    app = LabelApp(d, actor="alice")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("1", "2")
        before = app.ws.current()
        await pilot.press("1")  # the store fails here
        await pilot.pause()
        assert isinstance(app.screen, FatalScreen) and app.store_failed is not None
        assert app.ws.current() is before  # nothing moved on
        assert not app.check_action("accept", ()) and not app.check_action("undo", ())
        await pilot.press("x")  # any key closes
        await pilot.pause()
    assert app.return_code == EXIT_STORE_FAILED
    app.ws.close()
    assert len(stored(d)) == 2


def test_guideline_links_show_where_they_point():
    from labelloop.tui.screens import show_link_targets

    md = "Read [the policy](https://evil.example/steal) and [ref][r].\n\n[r]: https://evil.example/ref\n"
    out = show_link_targets(md)
    assert "the policy (https://evil.example/steal)" in out
    assert "https://evil.example/ref" in out and "](" not in out
