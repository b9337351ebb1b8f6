"""``labelloop config set``: settings change through the server, by admins only, checked, logged as an
event, in effect at once; the rest of labelloop.toml is kept as it was."""

from __future__ import annotations

import os
import stat

import pytest

from labelloop.core.api.client import LocalClient, SocketClient
from labelloop.core.api.protocol import SOCKET_NAME, ApiError
from labelloop.core.api.server import Server
from labelloop.core.api.service import Service
from labelloop.core.config import CONFIG_NAME
from labelloop.core.store.project import Project, current_actor
from tests.conftest import run_cli
from tests.tui_helpers import project_copy


def _config_events(d):
    with Project.open(d) as p:
        return p.store.dicts("SELECT actor, note FROM event_log WHERE kind = 'config' ORDER BY event_id")


def _with_roles(d):
    cfg = d / CONFIG_NAME
    text = (
        cfg.read_text().replace("admins = []", 'admins = ["lead"]').replace("annotators = []", 'annotators = ["alice"]')
    )
    cfg.write_text(text + "\n# a note of the lead's\n")
    return cfg


def test_an_admin_changes_a_setting_it_is_in_effect_logged_and_the_rest_of_the_file_kept(tmp_path):
    d = project_copy(tmp_path)
    cfg = _with_roles(d)
    os.chmod(cfg, 0o600)
    before = cfg.read_text().splitlines()
    svc = Service(d, compute="thread")
    try:
        r = LocalClient(svc, "lead").call("config_set", key="strategy.batch_size", value="30")
        assert (r["old"], r["new"]) == (50, 30) and svc.config.batch_size == 30
        r = LocalClient(svc, "lead").call("config_set", key="strategy.name", value="entropy")
        assert r["new"] == "entropy" and svc.config.strategy == "entropy"
    finally:
        svc.close()
    after = cfg.read_text().splitlines()
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    assert len(before) == len(after) and len(changed) == 2, changed
    assert changed[1][1].startswith("batch_size = 30  # items queued per retrain")
    assert "# a note of the lead's" in after
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    events = _config_events(d)
    assert [e["actor"] for e in events] == ["lead", "lead"]
    assert events[0]["note"] == "[strategy] batch_size: 50 -> 30"


def test_an_annotator_may_not_and_a_bad_value_is_one_sentence_with_the_file_unchanged(tmp_path):
    d = project_copy(tmp_path)
    cfg = _with_roles(d)
    before = cfg.read_bytes()
    svc = Service(d, compute="thread")
    try:
        with pytest.raises(ApiError) as e:
            LocalClient(svc, "alice").call("config_set", key="roles.admins", value='["alice"]')
        assert e.value.code == "denied" and "alice may not change the project's settings" in e.value.message
        for key, value, says in (
            ("strategy.audit_share", "2", "between 0 and 1"),
            ("strategy.name", "bogus", "must be one of"),
            ("labels.names", '["x"]', "fixed by labelloop init"),
            ("nope.x", "1", "is not a setting"),
        ):
            with pytest.raises(ApiError) as e:
                LocalClient(svc, "lead").call("config_set", key=key, value=value)
            assert e.value.code == "bad_request" and says in e.value.message and "\n" not in e.value.message
    finally:
        svc.close()
    assert cfg.read_bytes() == before
    assert [e["actor"] for e in _config_events(d)] == []


def test_config_set_goes_through_a_running_server(tmp_path):
    d = project_copy(tmp_path)
    srv = Server(d, compute="thread")
    srv.start()
    try:
        r = run_cli("config", "set", str(d), "team.lease_minutes", "5")
        assert r.returncode == 0 and "team.lease_minutes: 10.0 -> 5.0" in r.stdout, r.stdout + r.stderr
        assert srv.service.config.lease_minutes == 5.0
        c = SocketClient(d / SOCKET_NAME, reconnect_seconds=0)
        assert c.call("ping")["actor"] == current_actor()
        c.close()
    finally:
        srv.stop()
    assert [e["actor"] for e in _config_events(d)] == [current_actor()]
