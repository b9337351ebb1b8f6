"""The protocol (core/api/protocol.py): one table of typed operations, a versioned hello, requests
checked before any handler runs, and both transports carrying every operation alike."""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import threading
import typing
import uuid

import pytest

from labelloop.core.api import protocol
from labelloop.core.api import service as service_mod
from labelloop.core.api.client import LocalClient, SocketClient
from labelloop.core.api.protocol import OPS, PROTOCOL_VERSION, SOCKET_NAME, ApiError, decode_request
from labelloop.core.api.server import Server
from labelloop.core.api.service import HANDLERS
from labelloop.core.store.project import current_actor
from tests.conftest import ROOT, write_csv
from tests.tui_helpers import TRUTH, project_copy


def test_every_operation_has_one_handler_and_the_roles_come_from_the_table():
    assert set(HANDLERS) == set(OPS)
    assert protocol.ops_for("annotator") < protocol.ops_for("reviewer") < protocol.ops_for("admin") == set(OPS)
    assert "decide" in protocol.ops_for("annotator") and "adjudicate" not in protocol.ops_for("annotator")
    for name, op in OPS.items():
        assert dataclasses.is_dataclass(op.request) and dataclasses.is_dataclass(op.response), name
        assert op.role in protocol.ROLES and op.summary, name


def test_the_readme_protocol_section_matches_the_table():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### Protocol") :]
    section = section[: section.index("\n## ")] if "\n## " in section else section
    rows = re.findall(r"^\| `(\w+)` \| (\w+) \| ([^|]*)\| ([^|]*)\|", section, re.M)
    documented = {name: (role, args.strip()) for name, role, args, _ in rows}
    assert set(documented) == set(OPS), set(documented) ^ set(OPS)
    for name, op in OPS.items():
        role, args = documented[name]
        assert role == op.role, name
        assert args == (", ".join(f.name for f in dataclasses.fields(op.request)) or "none"), name


@pytest.mark.parametrize(
    "args, says",
    [
        ({"item_id": "\ud800", "action": "label", "msg_id": "m" * 10}, "lone surrogate"),
        ({"item_id": "a\x00b", "action": "label", "msg_id": "m" * 10}, "NUL"),
        ({"item_id": "x" * 70_000, "action": "label", "msg_id": "m" * 10}, "longer than"),
        ({"item_id": 5, "action": "label", "msg_id": "m" * 10}, "item_id must be text"),
        ({"item_id": "a", "action": "label", "msg_id": "m" * 10, "labels": "ham"}, "labels must be a list"),
        ({"item_id": "a", "action": "label", "msg_id": "m" * 10, "labels": [1]}, "labels[0] must be text"),
        ({"item_id": "a", "action": "label", "msg_id": "m" * 10, "duration_ms": True}, "duration_ms must be a number"),
        ({"item_id": "a", "action": "label"}, "missing argument 'msg_id'"),
        ({"item_id": "a", "action": "label", "msg_id": "m" * 10, "actor": "root"}, "unknown argument 'actor'"),
        ([1, 2], "args must be an object"),
    ],
)
def test_a_request_is_checked_against_its_type_before_any_handler(args, says):
    with pytest.raises(ApiError) as e:
        decode_request("decide", args)
    assert e.value.code == "bad_request" and says in e.value.message


def test_unknown_operations_and_deep_nesting_are_one_error_answer():
    with pytest.raises(ApiError) as e:
        decode_request("format_disk", {})
    assert e.value.code == "unknown_op"
    with pytest.raises(ValueError):
        protocol.loads_line(b"[" * 1000)
    # brackets inside a string are text, not nesting
    assert protocol.loads_line(('{"a": "' + "[" * 55 + '"}').encode()) == {"a": "[" * 55}


def _fake_server(path, first_line: bytes | None):
    """A listener that greets with ``first_line`` (or says nothing) and then hangs up."""
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.listen(4)

    def run():
        conn, _ = s.accept()
        if first_line is not None:
            conn.sendall(first_line)
        conn.recv(1 << 16)
        conn.close()

    threading.Thread(target=run, daemon=True).start()
    return s


def test_a_server_of_another_protocol_version_gets_one_sentence_naming_both(tmp_path):
    hello = {
        "protocol": PROTOCOL_VERSION + 1,
        "labelloop": "9.9.9",
        "server_user": "root",
        "server_uid": 0,
        "project": "x",
    }
    listener = _fake_server(tmp_path / "a.sock", (json.dumps({"hello": hello}) + "\n").encode())
    with pytest.raises(ApiError) as e:
        SocketClient(tmp_path / "a.sock", reconnect_seconds=0)
    listener.close()
    msg = e.value.message
    assert e.value.code == "protocol" and "\n" not in msg
    assert (
        f"protocol {PROTOCOL_VERSION + 1} (labelloop 9.9.9)" in msg
        and f"this client protocol {PROTOCOL_VERSION}" in msg
    )
    # a wave-2 server (no hello: it waits for the request) is named as the older protocol
    listener = _fake_server(tmp_path / "b.sock", b'{"id": 1, "ok": true, "data": {"actor": "x"}}\n')
    with pytest.raises(ApiError) as e:
        SocketClient(tmp_path / "b.sock", reconnect_seconds=0)
    listener.close()
    assert e.value.code == "protocol" and "older labelloop protocol (1)" in e.value.message


# -- every operation through both transports ------------------------------------------------------
def _requests(d, item_id: str, tmp_path) -> dict[str, dict]:
    """One valid request per operation (in the order they run: decisions before their undo)."""
    src = write_csv(tmp_path / "more.csv", ["id", "text"], [["new-1", "a brand new message"]])
    import polars as pl

    (tmp_path / "pool").mkdir()
    pl.DataFrame({"id": ["pool-1", "pool-2"], "text": ["win a prize now", "see you at lunch"]}).write_parquet(
        tmp_path / "pool" / "part-0.parquet"
    )
    return {
        "ping": {},
        "open_session": {"client": "test"},
        "next": {},
        "progress": {},
        "poll": {},
        "guidelines": {},
        "next_items": {"n": 3},
        "decide": {
            "item_id": item_id,
            "action": "label",
            "labels": [TRUTH[item_id]],
            "msg_id": uuid.uuid4().hex,
            "note": "fine",
            "duration_ms": 1200.5,
        },
        "status": {},
        "check": {},
        "metrics": {"arms": False},
        "retrain_start": {"why": "test"},
        "retrain_poll": {},
        "review_queue": {"include_decided": True},
        "review_item": {"item_id": item_id},
        "adjudicate": {"item_id": item_id, "labels": ["ham"], "msg_id": uuid.uuid4().hex, "rationale": "clear"},
        "undo_adjudication": {"msg_id": uuid.uuid4().hex},
        "send_back": {"item_id": item_id, "reason": "read again", "msg_id": uuid.uuid4().hex},
        "undo": {"msg_id": uuid.uuid4().hex},
        "export": {"path": str(tmp_path / "out.parquet"), "what": "final"},
        "model_export": {"path": str(tmp_path / "m.llm")},
        "import": {"path": str(src), "id_col": "id"},
        "model_import": {"path": str(tmp_path / "m.llm")},
        "config_set": {"key": "team.lease_minutes", "value": "12"},
        "pool_register": {"folder": str(tmp_path / "pool")},
        "close_session": {},
    }


def _check_json_type(value, tp, where: str) -> None:
    """``value`` (as decoded from JSON) is of the answer type's annotation ``tp``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, __import__("types").UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return
        return _check_json_type(value, next(t for t in typing.get_args(tp) if t is not type(None)), where)
    if tp is typing.Any:
        return
    expected = {str: str, bool: bool, int: int, float: (int, float), dict: dict, list: list}.get(origin or tp)
    assert expected is not None and isinstance(value, expected), f"{where}: {value!r} is not {tp}"
    assert not (tp is int and isinstance(value, bool)), where


@pytest.mark.parametrize("transport", ["in-process", "socket"])
def test_every_operation_round_trips_with_equal_values(tmp_path, monkeypatch, transport):
    """For each operation: the typed request the handler receives equals the request the client built,
    and the answer the client reads equals the answer the service sent, of the declared type."""
    d = project_copy(tmp_path)
    srv = Server(d, compute="thread")
    srv.start()
    seen: dict[str, list] = {"req": [], "answer": []}
    real_decode, real_encode = service_mod.decode_request, service_mod.encode_response
    monkeypatch.setattr(
        service_mod, "decode_request", lambda op, args: seen["req"].append(real_decode(op, args)) or seen["req"][-1]
    )
    monkeypatch.setattr(
        service_mod,
        "encode_response",
        lambda op, data: seen["answer"].append(real_encode(op, data)) or seen["answer"][-1],
    )
    client = SocketClient(d / SOCKET_NAME) if transport == "socket" else LocalClient(srv.service, current_actor())
    try:
        first = client.call("next")["item"]["item_id"]
        reqs = _requests(d, first, tmp_path)
        assert set(reqs) == set(OPS)
        session = None
        for op, args in reqs.items():
            if op in ("progress", "poll", "next", "close_session", "next_items") and session:
                args = {**args, "session": session}
            if op == "retrain_poll":
                srv.service.wait_job()
            fds, opened = None, None
            if transport == "socket" and OPS[op].file:
                opened = open(args["path"], "rb" if OPS[op].file == "in" else "wb")
                fds = [opened.fileno()]
            seen["req"].clear()
            seen["answer"].clear()
            if op == "pool_register" and transport == "socket":  # refused: the server must not lend its rights
                with pytest.raises(ApiError) as e:
                    client.call(op, **args)
                assert e.value.code == "denied" and "server stopped" in e.value.message
                continue
            answer = client.call(op, **args) if fds is None else client.call(op, _fds=fds, **args)
            if opened:
                opened.close()
            if op == "open_session":
                session = answer["session"]
            req = seen["req"][-1]
            sent = dict(args)
            if transport == "socket" and OPS[op].file:  # the server hands a private copy of the file over
                sent.pop("path"), sent.pop("rejects", None), sent.pop("source_name", None)
            for k, v in sent.items():
                assert getattr(req, k) == v, (op, k)
            assert type(req) is OPS[op].request
            server_answer = seen["answer"][-1]
            if transport == "socket" and OPS[op].file == "out":
                server_answer = {**server_answer, "path": args["path"]}  # the client's own path, not the copy's
            assert answer == server_answer, op
            hints = typing.get_type_hints(OPS[op].response)
            assert set(answer) == set(hints), op
            for k, v in answer.items():
                _check_json_type(v, hints[k], f"{op}.{k}")
    finally:
        client.close()
        srv.stop()
