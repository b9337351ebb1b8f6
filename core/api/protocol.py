"""The project API's protocol: its version, the hello, the errors, and every operation as a typed
request and a typed response in one table (``OPS``).

Both transports speak it. Over the Unix socket (``labelloop serve``) a request is one JSON line
``{"id", "op", "args"}`` and an answer ``{"id", "ok": true, "data"}`` or ``{"id", "ok": false,
"error": {"code", "message"}}``; the server's first line is a hello (``{"hello": {...}}``) that
carries ``PROTOCOL_VERSION``, and a client of another version stops with one sentence naming both.
In-process, ``LocalClient`` sends the same request through the same ``decode_request`` and gets
the answer back as the same JSON, so the two transports answer alike.

What a request holds is checked here, once, before any handler runs: unknown or missing arguments,
a wrong JSON type, text that is not text (a lone surrogate, a NUL byte) or too long, and lists too
long are a ``bad_request`` for that request alone. Answers are made JSON-safe here, once
(``encode``): dates become ISO strings, tuples lists.

The README's protocol section is checked against ``OPS`` (tests/test_protocol.py).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from labelloop.core.util.errors import LabelloopError, StoreError

PROTOCOL_VERSION = 2
"""Version 1 was the socket protocol of wave 2, which had no hello. Bump this when a request or an
answer changes shape; append operations and error codes, never rename them."""

SOCKET_NAME = "run/labelloop.sock"
"""The socket, in a folder of its own that only the server's user can write (core/api/folder.py)."""
MAX_LINE = 1 << 20
"""A request is one JSON line of at most 1 MiB: a longer line is refused before it is parsed, so a
bad length never becomes an allocation."""
MAX_ANSWER = 64 << 20
"""An answer (status, metrics of a big project) may be larger, up to 64 MiB."""
MAX_TEXT = 65_536
"""The longest string argument, in characters (a note, a rationale, a path, an id)."""
MAX_LIST = 10_000
"""The longest list argument (labels, metadata columns)."""
MAX_DEPTH = 32
"""JSON nested deeper than this is refused (Python's parser would otherwise recurse until it fails)."""

ERROR_CODES = (
    "bad_request",
    "unknown_op",
    "unknown_item",
    "not_leased",
    "unknown_user",
    "denied",
    "store_failed",
    "too_large",
    "busy",
    "server_gone",
    "internal",
    "protocol",
    "untrusted",
)
"""Codes a program can test; appended to, never renamed."""


class ApiError(LabelloopError):
    """An answer of the API that is an error: a code a program can test and one sentence for people."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message}


class StoreFailed(ApiError, StoreError):
    """The project store failed: every decision before it is saved; nothing more is taken."""

    def __init__(self, message: str):
        ApiError.__init__(self, "store_failed", message)


class ServerGone(ApiError):
    """The server stopped or does not answer."""

    def __init__(self, message: str):
        super().__init__("server_gone", message)


def raise_error(err: dict) -> None:
    """Raise the ApiError an error answer describes."""
    code = str(err.get("code", "internal"))
    message = str(err.get("message", "the server failed"))
    if code == "store_failed":
        raise StoreFailed(message)
    raise ApiError(code, message)


# -- the hello ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Hello:
    """The server's first line: who it is and what it speaks."""

    protocol: int
    labelloop: str
    server_user: str
    server_uid: int
    project: str


def check_hello(hello: dict) -> Hello:
    """The server's hello, or one sentence when it speaks another protocol version."""
    try:
        h = Hello(**hello)
    except TypeError:
        raise ApiError(
            "protocol",
            "the labelloop server sent a greeting this client cannot read; "
            f"this client speaks protocol {PROTOCOL_VERSION}.",
        ) from None
    if h.protocol != PROTOCOL_VERSION:
        raise ApiError(
            "protocol",
            f"the labelloop server speaks protocol {h.protocol} (labelloop {h.labelloop}) "
            f"and this client protocol {PROTOCOL_VERSION} (labelloop {package_version()}); "
            "use the same labelloop for both.",
        )
    return h


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("labelloop")
    except PackageNotFoundError:
        return "unknown"


# -- requests -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Empty:
    """No arguments."""


@dataclass(frozen=True)
class SessionArg:
    """The caller's session, when it has one."""

    session: str | None = None


@dataclass(frozen=True)
class OpenSession:
    client: str = "cli"


@dataclass(frozen=True)
class Decide:
    """One decision on a leased item. ``action``: label, accept (the suggestion), correction (another
    label than the suggestion, with a reason from the taxonomy), skip, flag."""

    item_id: str
    action: str
    msg_id: str
    labels: list[str] | None = None
    reason: str | None = None
    note: str | None = None
    duration_ms: float | None = None
    session: str | None = None
    lease: str | None = None


@dataclass(frozen=True)
class Undo:
    msg_id: str
    session: str | None = None


@dataclass(frozen=True)
class Metrics:
    arms: bool = False


@dataclass(frozen=True)
class NextItems:
    n: int = 20
    session: str | None = None


@dataclass(frozen=True)
class RetrainStart:
    why: str = "asked for"
    strategy: str | None = None
    batch: int | None = None
    seed: int | None = None


@dataclass(frozen=True)
class RetrainPoll:
    job: int | None = None


@dataclass(frozen=True)
class Export:
    path: str
    what: str = "final"


@dataclass(frozen=True)
class Import:
    path: str
    text_col: str = "text"
    id_col: str | None = None
    label_col: str | None = None
    split_col: str | None = None
    meta_cols: list[str] | None = None
    skip_invalid: bool = False
    label_sep: str = "|"
    dedupe: bool = False
    rejects: str | None = None
    source_name: str | None = None


@dataclass(frozen=True)
class PoolRegister:
    folder: str | None = None  # None with refresh: the registered folder
    id_col: str = "id"
    text_col: str = "text"
    refresh: bool = False


@dataclass(frozen=True)
class ModelExport:
    path: str
    version: int | None = None


@dataclass(frozen=True)
class ModelImport:
    path: str
    trust: bool = False
    source_name: str | None = None


@dataclass(frozen=True)
class ReviewQueue:
    include_decided: bool = False


@dataclass(frozen=True)
class ItemId:
    item_id: str


@dataclass(frozen=True)
class Adjudicate:
    item_id: str
    labels: list[str]
    msg_id: str
    rationale: str | None = None


@dataclass(frozen=True)
class MsgId:
    msg_id: str


@dataclass(frozen=True)
class SendBack:
    item_id: str
    reason: str
    msg_id: str


# -- responses ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Nothing:
    """An answer with no fields."""


@dataclass(frozen=True)
class Actor:
    actor: str


@dataclass(frozen=True)
class LoopState:
    """What every labelling answer carries: the annotator's queue, the retrain, the team."""

    left: int
    batch: int | None
    paused: str | None
    retraining: bool
    job: dict | None
    others: int
    done_session: int
    summary: str


@dataclass(frozen=True)
class Opened(LoopState):
    session: str = ""
    actor: str = ""
    roles: list[str] = field(default_factory=list)
    config_toml: str = ""
    config_path: str = ""
    project_dir: str = ""


@dataclass(frozen=True)
class Served(LoopState):
    item: dict | None = None


@dataclass(frozen=True)
class Decided(LoopState):
    event_id: int = 0
    duplicate: bool = False
    item: dict | None = None


@dataclass(frozen=True)
class Undone(LoopState):
    undone: str | None = None
    duplicate: bool = False
    item: dict | None = None


@dataclass(frozen=True)
class Progress(LoopState):
    per_hour: float | None = None


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class MetricsAnswer:
    snapshot: dict
    arms: dict | None
    arms_pending: bool


@dataclass(frozen=True)
class CheckAnswer:
    project: str
    labels: list[str]
    n_labels: int
    checks: list[dict]
    warnings: list[dict]
    measurements: list[dict]
    cost_per_point: list[dict]
    agreement: dict
    cost: dict
    pool_external: dict | None = None  # folder, files, items of an external pool
    compute: str = ""  # where the pool's work runs, as the cluster answered


@dataclass(frozen=True)
class StatusAnswer:
    project: str
    labels: list[str]
    items: dict
    pool_unlabelled: int
    final_labels: dict
    decided_by: dict
    gold_labels: list[dict]
    annotators: list[dict]
    queue: int
    queue_audit: int
    arms: dict
    audit_share_target: float
    corrections: dict
    events: int
    latest_model: dict | None
    agreement: dict
    review: dict
    gold: dict
    warnings: list[dict]
    team: dict
    pool_external: dict | None = None  # folder, files, items of an external pool
    compute: str = ""  # [compute] cluster as configured


@dataclass(frozen=True)
class Items:
    items: list[dict]


@dataclass(frozen=True)
class JobStarted:
    job: dict
    started: bool


@dataclass(frozen=True)
class JobState:
    job: dict
    batch: int | None


@dataclass(frozen=True)
class Exported:
    path: str | None
    what: str
    rows: int
    seconds: float


@dataclass(frozen=True)
class Imported:
    source: str
    format: str
    rows_read: int
    rows_imported: int
    rows_rejected: int
    rejects_file: str | None
    splits: dict
    labelled: int
    duplicates: dict
    deduped: int
    seconds: float
    duplicate_lines: list


@dataclass(frozen=True)
class ModelExported:
    path: str | None
    version: int


@dataclass(frozen=True)
class ModelImported:
    version: int


@dataclass(frozen=True)
class PoolRegistered:
    folder: str
    files: int
    items: int
    built: int
    skipped: list
    lines: list
    compute: str
    seconds: float


@dataclass(frozen=True)
class ReviewQueueAnswer:
    items: list[dict]
    counts: dict


@dataclass(frozen=True)
class ReviewItem:
    item_id: str
    text: str
    split: str
    metadata: Any
    model_version: int | None
    model_probs: dict | None
    events: list[dict]


@dataclass(frozen=True)
class Adjudicated:
    event_id: int
    duplicate: bool


@dataclass(frozen=True)
class AdjudicationUndone:
    undone: str | None
    duplicate: bool
    what: str | None = None  # "adjudication" or "send_back": what the undo took back


@dataclass(frozen=True)
class SentBack:
    item_id: str
    duplicate: bool
    undone: int | None = None


@dataclass(frozen=True)
class ConfigSet:
    key: str
    value: str


@dataclass(frozen=True)
class ConfigChanged:
    key: str
    old: Any
    new: Any
    event_id: int


# -- the table ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Op:
    """One operation: its request and response types, the least role that may call it, and how the
    transports treat it."""

    request: type
    response: type
    role: str
    summary: str  # what the caller does, as a verb phrase ("alice may not <summary>")
    reads: bool = False  # scans the project on a reader cursor of its own, outside the service lock
    resend: bool = False  # safe to send again after a dropped connection (reads; decisions carry msg_id)
    file: str | None = None  # over the socket: "in" reads a file the client opened, "out" writes into one


OPS: dict[str, Op] = {
    "ping": Op(Empty, Actor, "annotator", "ping the server", resend=True),
    "open_session": Op(OpenSession, Opened, "annotator", "start labelling", resend=True),
    "close_session": Op(SessionArg, Nothing, "annotator", "end a session", resend=True),
    "next": Op(SessionArg, Served, "annotator", "take the next item", resend=True),
    "decide": Op(Decide, Decided, "annotator", "store a decision", resend=True),
    "undo": Op(Undo, Undone, "annotator", "undo their latest decision", resend=True),
    "progress": Op(SessionArg, Progress, "annotator", "see the queue and the pace", resend=True),
    "poll": Op(SessionArg, Progress, "annotator", "poll the queue and the retrain", resend=True),
    "guidelines": Op(Empty, Text, "annotator", "read the guidelines", resend=True),
    "metrics": Op(Metrics, MetricsAnswer, "annotator", "see the metrics", reads=True, resend=True),
    "status": Op(Empty, StatusAnswer, "annotator", "see the project's status", reads=True, resend=True),
    "check": Op(Empty, CheckAnswer, "annotator", "run the readiness check", reads=True, resend=True),
    "next_items": Op(NextItems, Items, "annotator", "list the items queued for them", resend=True),
    "retrain_start": Op(RetrainStart, JobStarted, "annotator", "start a retrain", resend=True),
    "retrain_poll": Op(RetrainPoll, JobState, "annotator", "follow a retrain", resend=True),
    "export": Op(Export, Exported, "reviewer", "export labels", file="out"),
    "review_queue": Op(ReviewQueue, ReviewQueueAnswer, "reviewer", "see the review queue"),
    "review_item": Op(ItemId, ReviewItem, "reviewer", "see every version of an item"),
    "adjudicate": Op(Adjudicate, Adjudicated, "reviewer", "adjudicate an item"),
    "undo_adjudication": Op(MsgId, AdjudicationUndone, "reviewer", "undo an adjudication"),
    "send_back": Op(SendBack, SentBack, "reviewer", "send an item back to its annotators"),
    "import": Op(Import, Imported, "admin", "import items", file="in"),
    "model_export": Op(ModelExport, ModelExported, "admin", "export a model", file="out"),
    "model_import": Op(ModelImport, ModelImported, "admin", "import a model", file="in"),
    "config_set": Op(ConfigSet, ConfigChanged, "admin", "change the project's settings"),
    "pool_register": Op(PoolRegister, PoolRegistered, "admin", "register an external pool"),
}
"""Every operation of the API. Append; never rename (clients of this protocol version rely on it)."""

ROLES = ("annotator", "reviewer", "admin")
"""Each role may do what the roles before it may."""


def ops_for(role: str) -> frozenset[str]:
    """The operations a role may call."""
    rank = ROLES.index(role)
    return frozenset(name for name, op in OPS.items() if ROLES.index(op.role) <= rank)


# -- checking what a request holds --------------------------------------------------------------------
def _bad(op: str, message: str) -> ApiError:
    return ApiError("bad_request", f"{op}: {message}")


def _check_text(op: str, name: str, value: str) -> str:
    if len(value) > MAX_TEXT:
        raise _bad(op, f"{name} is longer than {MAX_TEXT} characters")
    if "\x00" in value:
        raise _bad(op, f"{name} holds a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad(op, f"{name} is not valid text (a lone surrogate)") from None
    return value


def _check(op: str, name: str, value, tp) -> Any:
    """``value`` as the JSON form of type ``tp`` (str, int, float, bool, list[str], dict, X | None)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        inner = [t for t in options if t is not type(None)]
        return _check(op, name, value, inner[0])
    if tp is str:
        if not isinstance(value, str):
            raise _bad(op, f"{name} must be text")
        return _check_text(op, name, value)
    if tp is bool:
        if not isinstance(value, bool):
            raise _bad(op, f"{name} must be true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(op, f"{name} must be a whole number")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise _bad(op, f"{name} must be a number")
        return float(value)
    if origin is list:
        if not isinstance(value, list):
            raise _bad(op, f"{name} must be a list")
        if len(value) > MAX_LIST:
            raise _bad(op, f"{name} holds more than {MAX_LIST} entries")
        (inner,) = typing.get_args(tp)
        return [_check(op, f"{name}[{i}]", v, inner) for i, v in enumerate(value)]
    raise TypeError(f"no JSON check for {tp!r}")  # a protocol table that names an unknown type


_HINTS: dict[type, dict] = {}


def _hints(cls: type) -> dict:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def decode_request(op: str, args) -> Any:
    """The typed request of ``op`` from the JSON ``args``; ApiError(bad_request) naming what is wrong."""
    spec = OPS.get(op) if isinstance(op, str) else None
    if spec is None:
        raise ApiError("unknown_op", f"unknown operation {str(op)[:40]!r}")
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise _bad(op, "args must be an object of the operation's arguments")
    hints = _hints(spec.request)
    fields = {f.name: f for f in dataclasses.fields(spec.request)}
    unknown = [k for k in args if k not in fields]
    if unknown:
        raise _bad(op, f"unknown argument {str(unknown[0])[:40]!r} (it takes {', '.join(fields) or 'none'})")
    missing = [
        n
        for n, f in fields.items()
        if n not in args and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise _bad(op, f"missing argument {missing[0]!r}")
    return spec.request(**{k: _check(op, k, v, hints[k]) for k, v in args.items()})


def request_args(req) -> dict:
    """A typed request as the keyword arguments of its handler."""
    return {f.name: getattr(req, f.name) for f in dataclasses.fields(req)}


# -- answers ------------------------------------------------------------------------------------------
def _default(value):
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if hasattr(value, "item"):  # a numpy scalar
        return value.item()
    return str(value)


def encode(value) -> Any:
    """``value`` in JSON types, exactly as the socket would carry it."""
    return json.loads(json.dumps(value, default=_default))


def encode_response(op: str, data: dict) -> dict:
    """A handler's answer, checked against the op's response type (every field, no other) and made
    JSON-safe: the one place where answers cross the boundary."""
    spec = OPS[op]
    try:
        typed = spec.response(**data)
    except TypeError as exc:  # a handler that answers another shape is a bug of the server
        raise ApiError("internal", f"the server's answer to {op} does not match the protocol ({exc})") from None
    return encode({f.name: getattr(typed, f.name) for f in dataclasses.fields(typed)})


def loads_line(line: bytes | str):
    """One JSON line, refusing nesting deeper than ``MAX_DEPTH`` before the parser recurses into it."""
    text = line.decode("utf-8", errors="strict") if isinstance(line, bytes) else line
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return json.loads(text)
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_DEPTH:
                raise ValueError(f"the JSON is nested deeper than {MAX_DEPTH} levels")
        elif ch in "]}":
            depth -= 1
    return json.loads(text)
