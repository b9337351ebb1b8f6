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
import time
from pathlib import Path

from labelloop.core.errors import LabelloopError
from labelloop.core.service import ApiError, Service, StoreFailed, _InProcess

SOCKET_NAME = "labelloop.sock"
MAX_LINE = 1 << 20           # requests and answers are one JSON line of at most 1 MiB (answers: 64 MiB)
MAX_ANSWER = 64 << 20
# Safe to send again after a dropped connection: reads, and decisions (they carry a message id).
RESENDABLE = {"ping", "open_session", "close_session", "next", "decide", "undo", "progress", "poll", "guidelines",
              "metrics", "status", "next_items", "retrain_poll", "retrain_start"}


def raise_error(err: dict) -> None:
    code = str(err.get("code", "internal"))
    message = str(err.get("message", "the server failed"))
    if code == "store_failed":
        raise StoreFailed(message)
    raise ApiError(code, message)


class Client(abc.ABC):
    """What the workstation and the CLI hold: ``call(op, **args) -> dict`` and ``close()``."""

    transport = "?"
    actor: str | None = None

    @abc.abstractmethod
    def call(self, op: str, **args) -> dict:
        """Run one operation of the project API (see core/service.py); raises ApiError."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class LocalClient(Client, _InProcess):
    """The service in this process. ``own``: close the service with the client."""

    transport = "in-process"

    def __init__(self, service: Service, actor: str, *, own: bool = False):
        self.service = service
        self.actor = actor
        self.own = own

    def call(self, op: str, **args) -> dict:
        return self.service.handle(self.actor, op, args, conn=self)

    def close(self) -> None:
        try:
            self.service.disconnected(self)
        finally:
            if self.own:
                self.service.close()


class ServerGone(ApiError):
    def __init__(self, message: str):
        super().__init__("server_gone", message)


class SocketClient(Client):
    transport = "socket"

    def __init__(self, path: Path | str, *, timeout: float = 120.0, reconnect_seconds: float = 15.0):
        self.path = str(path)
        self.timeout = timeout
        self.reconnect_seconds = reconnect_seconds
        self._ids = itertools.count(1)
        self._sock: socket.socket | None = None
        self._buf = b""
        self._connect()
        self.actor = self.call("ping")["actor"]

    def _connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self.path)
        except OSError:
            s.close()
            raise
        self._sock, self._buf = s, b""

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
                break
            except (ConnectionError, BrokenPipeError, FileNotFoundError, socket.timeout, OSError) as exc:
                self._drop()
                if isinstance(exc, socket.timeout):
                    raise ServerGone(f"the labelloop server did not answer within {self.timeout:.0f} s") from None
                if op not in RESENDABLE or time.monotonic() > deadline:
                    raise ServerGone("the labelloop server stopped (the connection closed); what it acknowledged "
                                     "is saved. Start it again with: labelloop serve DIR") from None
                time.sleep(0.2)
        if not answer.get("ok"):
            raise_error(answer.get("error") or {})
        return answer.get("data") or {}

    def close(self) -> None:
        self._drop()


def socket_path(project_dir: Path | str) -> Path:
    return Path(project_dir) / SOCKET_NAME


def server_client(project_dir: Path | str) -> SocketClient | None:
    """A client of the server running for this project, or None when no server answers."""
    path = socket_path(project_dir)
    if not path.exists():
        return None
    try:
        return SocketClient(path, reconnect_seconds=0)
    except ServerGone:
        return None
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):  # a socket left by a server that died
            return None
        if exc.errno == errno.EACCES:
            raise LabelloopError(f"{path}: you may not use this project's server (permission denied); the "
                                 "project's admin can add you to the folder's group.") from None
        raise


def connect(project_dir: Path | str, *, actor: str | None = None, compute: str = "process") -> Client:
    """The project's server when one runs, else the project in this process (as ``actor``, the OS
    login by default; a server ignores ``actor`` and uses the socket's peer)."""
    client = server_client(project_dir)
    if client is not None:
        client.reconnect_seconds = 15.0
        return client
    from labelloop.core.project import current_actor
    actor = actor or current_actor()
    # in-process, the caller owns the file (and could write to it directly): they are its admin
    service = Service(project_dir, compute=compute, owner=actor)
    return LocalClient(service, actor, own=True)
