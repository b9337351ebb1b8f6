"""The two transports of the project API, behind one ``call(op, **args) -> dict``.

- ``LocalClient``: the service in this process (one user, no server; the README's first command).
- ``SocketClient``: JSON Lines over the Unix socket that ``labelloop serve`` creates in the project
  folder. The server learns who is calling from the socket (the peer's OS user), never from the
  request. A dropped connection is re-opened and the request sent again; decisions carry a client
  message id, so a resent decision is stored once.

``connect(dir)`` picks the socket when a server answers there, else opens the project in-process.
"""

from __future__ import annotations

import abc
import array
import errno
import itertools
import json
import os
import socket
import struct
import time
from pathlib import Path

from labelloop.core.api.files import InProcess
from labelloop.core.api.protocol import (
    MAX_ANSWER,
    MAX_LINE,
    OPS,
    SOCKET_NAME,
    ApiError,
    Hello,
    ServerGone,
    check_hello,
    raise_error,
)
from labelloop.core.api.service import Service
from labelloop.core.util.errors import LabelloopError

HELLO_SECONDS = 10.0
"""How long a client waits for the server's hello before it calls the server silent."""


class Client(abc.ABC):
    """What the workstation and the CLI hold: ``call(op, **args) -> dict`` and ``close()``."""

    transport = "?"
    actor: str | None = None

    @abc.abstractmethod
    def call(self, op: str, **args) -> dict:
        """Run one operation of the project API (see core/api/service.py); raises ApiError."""

    def close(self) -> None:
        pass

    def warm_up(self) -> None:
        """Get ready to retrain before the first retrain asks (in-process: start the training process
        in the background). Over the socket the server does this itself."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class LocalClient(Client, InProcess):
    """The service in this process. ``own``: close the service with the client. The request and the
    answer go through JSON as they would over the socket, so both transports answer alike."""

    transport = "in-process"

    def __init__(self, service: Service, actor: str, *, own: bool = False):
        self.service = service
        self.actor = actor
        self.own = own

    def call(self, op: str, **args) -> dict:
        try:
            args = json.loads(json.dumps(args))
        except (TypeError, ValueError):
            raise ApiError("bad_request", f"{op}: the arguments are not JSON") from None
        return json.loads(json.dumps(self.service.handle(self.actor, op, args, conn=self)))

    def warm_up(self) -> None:
        self.service.warm_up()

    def close(self) -> None:
        try:
            self.service.disconnected(self)
        finally:
            if self.own:
                self.service.close()


class SocketClient(Client):
    transport = "socket"

    def __init__(
        self,
        path: Path | str,
        *,
        timeout: float = 120.0,
        reconnect_seconds: float = 15.0,
        expect_uid: int | None = None,
    ):
        """``expect_uid``: the user the server must run as; by default the owner of the project folder
        (the socket is DIR/run/labelloop.sock). A socket served by anyone else is refused before a
        byte or a file descriptor is sent to it."""
        self.path = str(path)
        p = Path(path)
        self.expect_uid = (
            expect_uid if expect_uid is not None else (_owner(p.parent.parent) if p.parent.name == "run" else None)
        )
        self.timeout = timeout
        self.reconnect_seconds = reconnect_seconds
        self._ids = itertools.count(1)
        self._sock: socket.socket | None = None
        self._buf = b""
        self.hello: Hello | None = None
        self._connect()
        self.actor = self.call("ping")["actor"]

    def _connect(self) -> None:
        """Connect and read the server's hello: a server of another protocol version is refused here,
        before any request is sent."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(HELLO_SECONDS)
        try:
            s.connect(self.path)
            self._check_peer(s)
            self._sock, self._buf = s, b""
            try:
                first = json.loads(self._readline())
            except socket.timeout:
                raise ApiError(
                    "protocol",
                    f"the server at {self.path} sent no greeting within {HELLO_SECONDS:.0f} s: "
                    "it is not a labelloop server of this version (or it is stuck)",
                ) from None
            except ValueError:
                raise ApiError("protocol", f"the server at {self.path} does not speak the labelloop protocol") from None
            hello = first.get("hello") if isinstance(first, dict) else None
            if not isinstance(hello, dict):
                raise ApiError(
                    "protocol",
                    f"the server at {self.path} sent no hello: it speaks an older labelloop "
                    "protocol (1); use the same labelloop for the server and its clients.",
                )
            self.hello = check_hello(hello)
        except BaseException:
            self._sock = None
            s.close()
            raise
        s.settimeout(self.timeout)

    def _check_peer(self, s: socket.socket) -> None:
        if self.expect_uid is None:
            return
        _pid, uid, _gid = struct.unpack(
            "3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        )
        if uid != self.expect_uid:
            raise ApiError(
                "untrusted",
                f"{self.path} is served by {_name(uid)}, not by {_name(self.expect_uid)} who owns the project; "
                "nothing was sent to it (tell the project's owner).",
            )

    def _drop(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        self._sock = None

    def _readline(self) -> bytes:
        while b"\n" not in self._buf:
            chunk = self._sock.recv(1 << 16)
            if not chunk:
                raise ConnectionResetError("the server closed the connection")
            self._buf += chunk
            if len(self._buf) > MAX_ANSWER:
                raise ApiError("too_large", "the server's answer is too large")
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def call(self, op: str, _fds: list[int] | None = None, **args) -> dict:
        req_id = next(self._ids)
        line = (json.dumps({"id": req_id, "op": op, "args": args}) + "\n").encode()
        if len(line) > MAX_LINE:
            raise ApiError("too_large", f"the request is larger than {MAX_LINE} bytes")
        deadline = time.monotonic() + self.reconnect_seconds
        while True:
            try:
                if self._sock is None:
                    self._connect()
                if _fds:
                    self._sock.sendmsg([line], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", _fds))])
                else:
                    self._sock.sendall(line)
                while True:
                    answer = json.loads(self._readline())
                    if answer.get("id") == req_id:
                        break
                    if answer.get("id") is None and not answer.get("ok"):
                        self._drop()  # the server refused the connection (busy) or the request's framing
                        raise_error(answer.get("error") or {})
                break
            except (ConnectionError, BrokenPipeError, FileNotFoundError, socket.timeout, OSError) as exc:
                self._drop()
                if isinstance(exc, socket.timeout):
                    raise ServerGone(f"the labelloop server did not answer within {self.timeout:.0f} s") from None
                if not (op in OPS and OPS[op].resend) or time.monotonic() > deadline:
                    raise ServerGone(
                        "the labelloop server stopped (the connection closed); what it acknowledged "
                        "is saved. Start it again with: labelloop serve DIR"
                    ) from None
                time.sleep(0.2)
        if not answer.get("ok"):
            raise_error(answer.get("error") or {})
        return answer.get("data") or {}

    def close(self) -> None:
        self._drop()


def retrain_and_wait(client: Client, why: str, *, timeout: float = 600, poll_seconds: float = 0.05, **options) -> dict:
    """Start a retrain (or join the one running) and poll it until it ends; the finished job. Options:
    strategy, batch, seed (admins). Raises LabelloopError when it fails or outlasts ``timeout``."""
    job = client.call("retrain_start", why=why, **options)["job"]
    deadline = time.monotonic() + timeout
    while job["running"]:
        if time.monotonic() > deadline:
            raise LabelloopError(f"the retrain did not finish within {timeout:.0f} s")
        time.sleep(poll_seconds)
        job = client.call("retrain_poll", job=job["id"])["job"]
    if job["error"]:
        raise LabelloopError(f"the retrain failed: {job['error']}")
    return job


def _owner(path: Path | str) -> int | None:
    try:
        return os.stat(path).st_uid
    except OSError:
        return None


def _name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def socket_path(project_dir: Path | str) -> Path:
    return Path(project_dir) / SOCKET_NAME


def server_client(project_dir: Path | str) -> SocketClient | None:
    """A client of the server running for this project, or None when no server answers."""
    path = socket_path(project_dir)
    try:
        return SocketClient(path, reconnect_seconds=0)
    except ServerGone:
        return None
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTDIR):  # none, or one that died
            return None
        if exc.errno == errno.EACCES:
            raise LabelloopError(
                f"{path}: you may not use this project's server (permission denied); its owner lets the "
                "team in with labelloop serve DIR --group GROUP, and GROUP must be one of yours (id -Gn)."
            ) from None
        raise


def connect(project_dir: Path | str, *, actor: str | None = None, compute: str = "process") -> Client:
    """The project's server when one runs, else the project in this process (as ``actor``, the OS
    login by default; a server ignores ``actor`` and uses the socket's peer)."""
    client = server_client(project_dir)
    if client is not None:
        client.reconnect_seconds = 15.0
        return client
    from labelloop.core.store.project import current_actor

    owner = _owner(project_dir)
    db = Path(project_dir) / "project.duckdb"
    if owner is not None and owner != os.geteuid() and not os.access(db, os.R_OK | os.W_OK):
        # someone else's project and no server: opening its files would only say "Permission denied"
        raise LabelloopError(
            f"the labelloop server for {project_dir} is not running (the project belongs to {_name(owner)}, "
            f"who starts it with: labelloop serve {project_dir} --group GROUP)."
        )
    actor = actor or current_actor()
    # in-process, the caller owns the file (and could write to it directly): they are its admin
    service = Service(project_dir, compute=compute, owner=actor)
    return LocalClient(service, actor, own=True)
