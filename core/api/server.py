"""``labelloop serve DIR``: the project API over a Unix socket in the project folder.

The server is the only process that opens the DuckDB file. Each connection has a thread that first
sends the hello (the protocol version and who the server is), then reads JSON Lines requests
``{"id", "op", "args"}`` and answers ``{"id", "ok", "data"}`` or ``{"id", "ok": false, "error":
{"code", "message"}}`` (core/api/protocol.py); every request is executed on one database thread. The caller
is the socket's peer (``SO_PEERCRED``: the OS user of the SSH login), never a field of the request.

Files travel as file descriptors (``SCM_RIGHTS``): ``import`` reads a file the caller opened and
``export`` writes into one the caller created, so the server never opens a path a client names (it
could otherwise read or overwrite files of the server's user).

An optional TCP listener (off by default) takes users with tokens (``labelloop token add USER``):
the first line must be ``{"op": "auth", "args": {"user", "token"}}``. It carries no files.
"""

from __future__ import annotations

import array
import grp
import hashlib
import hmac
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import struct
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from labelloop.core.api.folder import check_folder, private_run_dir, read_text_nofollow, secure_folder
from labelloop.core.api.protocol import (
    MAX_LINE,
    OPS,
    PROTOCOL_VERSION,
    SOCKET_NAME,
    ApiError,
    Hello,
    loads_line,
    package_version,
)
from labelloop.core.api.service import Service
from labelloop.core.config import CONFIG_NAME
from labelloop.core.store.imports import check_gzip
from labelloop.core.util.errors import LabelloopError
from labelloop.core.util.safeio import atomic_write_text, remove_leftovers, set_umask

TOKENS_NAME = "tokens.json"
MAX_FDS = 4
"""File descriptors one request may carry (import and export hand over one)."""
MAX_PER_USER = 32
"""Connections one user may hold open at once (a workstation holds one, a command one more)."""
MAX_UNSIGNED_TCP = 16
"""TCP connections that have not signed in yet, all together: nobody cannot flood the listener."""
FIRST_REQUEST_SECONDS = 10.0
"""A connection that has not completed a request (or signed in) by then is closed."""
ACCEPT_BACKOFF_MAX = 1.0
"""Longest pause between accept attempts while the process is out of descriptors or memory."""


def connection_limit() -> int:
    """Connections the server accepts in all: well below the descriptor limit (raised to the hard limit
    first), leaving room for the database, the training process and the files of imports and exports."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, 65536), hard))
            soft = min(want, 65536)
        except (ValueError, OSError):
            pass
    return max(16, min(512, soft // 2 - 64))


def _copy_bounded(src, out, limit: int, name: str) -> None:
    """Copy a file a client handed over, refusing it once it passes ``limit`` bytes."""
    copied = 0
    while chunk := src.read(1 << 20):
        copied += len(chunk)
        if copied > limit:
            raise LabelloopError(
                f"{name} is larger than {limit / 2**20:,.0f} MiB, the project's limit "
                "([project] max_import_mib); nothing was imported."
            )
        out.write(chunk)


def _close_all(fds) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def peer_user(conn: socket.socket) -> str:
    """The OS user at the other end of a Unix socket."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid{uid}"


# -- tokens for the TCP listener ---------------------------------------------------------------------
def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add_token(project_dir: Path | str, user: str) -> str:
    """A new token for ``user`` (replacing theirs); only its hash is stored, in a file only the
    project owner can read."""
    if not user or any(c.isspace() or ord(c) < 32 for c in user) or len(user) > 64:
        raise LabelloopError(f"{user!r} is not a user name")
    path = Path(project_dir) / TOKENS_NAME
    tokens = _read_tokens(path)
    token = secrets.token_urlsafe(24)
    tokens[user] = _token_hash(token)
    old = os.umask(0o077)
    try:
        atomic_write_text(path, json.dumps(tokens, indent=1))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    return token


def _read_tokens(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        data = json.loads(read_text_nofollow(path))
    except (OSError, ValueError) as exc:
        raise LabelloopError(f"{path}: cannot read the token file ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise LabelloopError(f"{path}: the token file is damaged (expected user: hash)")
    return data


def token_user(project_dir: Path, user, token) -> str | None:
    if not isinstance(user, str) or not isinstance(token, str):
        return None
    expected = _read_tokens(project_dir / TOKENS_NAME).get(user)
    if expected and hmac.compare_digest(expected, _token_hash(token)):
        return user
    return None


# -- the server -----------------------------------------------------------------------------------
class Server:
    def __init__(
        self,
        project_dir: Path | str,
        *,
        compute: str = "process",
        tcp: tuple[str, int] | None = None,
        log=None,
        group: str | None = None,
    ):
        self.dir = Path(project_dir)
        self.path = self.dir / SOCKET_NAME
        self.log = log or (lambda msg: None)
        self.group = group
        # Everything the server creates from now on (the WAL, the cache, models, exports) is its
        # user's alone, as PostgreSQL's umask 077; the socket is opened to the team explicitly.
        self._umask = set_umask(0o077)  # given back by stop() (a server inside a test process)
        try:
            self._prepare_folder()
            self.service = Service(self.dir, compute=compute)
        except BaseException:
            set_umask(self._umask)
            raise
        self.db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="labelloop-db")
        # status and metrics scan the whole project: their own thread and cursor, so decisions never wait
        self.reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="labelloop-read")
        self.tcp = tcp
        self._stop = threading.Event()
        self._listeners: list[socket.socket] = []
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        self._per_user: dict[str, int] = {}  # open connections by peer (Unix) or "(tcp)" before sign-in
        self.max_connections = connection_limit()
        uid = os.geteuid()
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = f"uid{uid}"
        hello = Hello(
            protocol=PROTOCOL_VERSION,
            labelloop=package_version(),
            server_user=user,
            server_uid=uid,
            project=str(self.service.config.name),
        )
        self._hello = (json.dumps({"hello": hello.__dict__}) + "\n").encode()

    def _prepare_folder(self) -> None:
        """Before the store is opened: no other server runs here, what a killed one left is removed,
        and the folder is the server's (the team layout applied with --group)."""
        if not (self.dir / CONFIG_NAME).is_file():
            raise LabelloopError(
                f"{self.dir} is not a labelloop project (no {CONFIG_NAME}); create one with "
                f"labelloop init {self.dir} --labels a,b"
            )
        self._check_not_running()
        # no server runs for this folder: what an earlier one left behind (a killed import's copy, an
        # export half written) is nobody's now
        left = remove_leftovers([self.dir, self.dir / "cache", self.dir / "models"])
        self._own_folder()
        if left:
            self.log(
                f"labelloop serve: removed {len(left)} temporary file(s) left by an earlier run: "
                + ", ".join(f"{p.relative_to(self.dir)} ({size / 2**20:.1f} MiB)" for p, size in left)
            )

    def _own_folder(self) -> None:
        """With a team group: give the folder the team layout and say what changed. Then refuse to
        start on anything another user could have written, read or planted (one sentence each)."""
        if self.group is not None:
            for change in secure_folder(self.dir, self.group):
                self.log(f"labelloop serve: {change}")
        else:
            private_run_dir(self.dir)
        problems = check_folder(self.dir, group=self.group)
        if problems:
            more = f" ({len(problems) - 1} more: labelloop doctor {self.dir})" if len(problems) > 1 else ""
            raise LabelloopError(f"refusing to serve: {problems[0].sentence()}{more}")

    def _check_not_running(self) -> None:
        for folder in (self.dir, self.path.parent):
            if folder.is_symlink() or (folder.exists() and folder.stat().st_uid != os.geteuid()):
                raise LabelloopError(
                    f"refusing to serve: {folder} is a link or belongs to someone else; remove it "
                    "or run the server as the project's owner"
                )
        if not self.path.exists() and not self.path.is_symlink():
            return
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(self.path))
        except OSError:
            if not self.path.is_socket():
                raise LabelloopError(f"{self.path} exists and is not a socket; move it away.") from None
            self.path.unlink()  # left by a server that died
            return
        finally:
            probe.close()
        raise LabelloopError(f"a labelloop server already runs for {self.dir} ({self.path}).")

    def _bind_unix(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o117)  # rw for the owner and the group, nothing for others
        try:
            s.bind(str(self.path))
        finally:
            os.umask(old)
        gid = self.path.parent.stat().st_gid
        try:
            os.chown(self.path, -1, gid)  # run/'s group: the team with --group, else only the owner reaches run/
        except OSError:
            pass
        os.chmod(self.path, 0o660)
        s.listen(128)
        return s

    def start(self) -> None:
        """Bind and start accepting (in background threads). The assignment is read from the store
        first, so clients reconnecting after a restart find it ready."""
        self.db.submit(lambda: self.service.assign).result()
        unix = self._bind_unix()
        self._listeners.append(unix)
        threading.Thread(target=self._accept, args=(unix, False), daemon=True, name="labelloop-accept").start()
        if self.tcp:
            t = socket.create_server(self.tcp, reuse_port=False)
            self._listeners.append(t)
            threading.Thread(target=self._accept, args=(t, True), daemon=True, name="labelloop-accept-tcp").start()
        if self.service.compute == "process":
            threading.Thread(target=self.service.warm_up, daemon=True, name="labelloop-warm-up").start()
        try:
            group = grp.getgrgid(self.dir.stat().st_gid).gr_name
        except KeyError:
            group = str(self.dir.stat().st_gid)
        self.log(
            f"labelloop serve: {self.dir} on {self.path} (group {group})"
            + (f" and TCP {self.tcp[0]}:{self.tcp[1]}" if self.tcp else "")
        )

    def serve_forever(self) -> None:
        # The handlers come first: a SIGTERM sent as soon as the socket exists must stop the server.
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda *_: self._stop.set())
        self.start()
        # A timed wait: a signal the kernel hands to another thread (a DuckDB or accept thread) only
        # runs its handler when the main thread next wakes; an untimed wait once never woke (a SIGTERM
        # sent right after start-up was lost).
        while not self._stop.wait(0.2):
            pass
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        set_umask(self._umask)
        for s in self._listeners:
            try:
                s.close()
            except OSError:
                pass
        with self._open_lock:
            open_conns = list(self._open)
        for c in open_conns:  # clients see the connection close and reconnect to the next server
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        try:
            self.path.unlink()
        except OSError:
            pass
        self.db.shutdown(wait=True)
        self.reader.shutdown(wait=True)
        self.service.close()

    # -- connections --------------------------------------------------------------------------
    def _accept(self, listener: socket.socket, tcp: bool) -> None:
        """Accept for as long as the server runs: an error (out of descriptors, of memory) is logged once
        and retried with a growing pause, never the end of the listener."""
        pause, last_error = 0.01, None
        while not self._stop.is_set():
            try:
                conn, _addr = listener.accept()
            except OSError as exc:
                if self._stop.is_set():
                    return
                if type(exc) is not type(last_error):
                    self.log(f"labelloop serve: accepting a connection failed ({exc}); retrying")
                last_error = exc
                time.sleep(pause)
                pause = min(pause * 2, ACCEPT_BACKOFF_MAX)
                continue
            pause, last_error = 0.01, None
            who = "(tcp)" if tcp else None
            try:
                who = who or peer_user(conn)
            except OSError:
                conn.close()
                continue
            refusal = self._admit(who, tcp)
            if refusal is not None:
                self._refuse(conn, refusal)
                continue
            try:
                threading.Thread(
                    target=self._connection, args=(conn, tcp, who), daemon=True, name="labelloop-conn"
                ).start()
            except RuntimeError:  # no thread can be started now: this connection only is refused
                self._release(who)
                self._refuse(conn, "the server cannot take another connection now; try again in a moment")

    def _admit(self, who: str, tcp: bool) -> str | None:
        """Count a new connection of ``who``; the sentence that refuses it when a limit is reached."""
        with self._open_lock:
            total = sum(self._per_user.values())
            limit = MAX_UNSIGNED_TCP if who == "(tcp)" else MAX_PER_USER
            if total >= self.max_connections:
                return f"the server holds {total} connections, its limit; try again in a moment"
            if self._per_user.get(who, 0) >= limit:
                whose = "unsigned TCP connections" if who == "(tcp)" else f"{who} holds {limit} open connections"
                return f"too many connections: {whose}, the limit; close some and try again"
            self._per_user[who] = self._per_user.get(who, 0) + 1
        return None

    def _release(self, who: str) -> None:
        with self._open_lock:
            n = self._per_user.get(who, 0) - 1
            if n > 0:
                self._per_user[who] = n
            else:
                self._per_user.pop(who, None)

    def _refuse(self, conn: socket.socket, message: str) -> None:
        """One answer saying why, then close (best effort: the peer may not read it)."""
        try:
            conn.settimeout(0.5)
            conn.sendall(
                self._hello
                + (json.dumps({"id": None, "ok": False, "error": {"code": "busy", "message": message}}) + "\n").encode()
            )
        except OSError:
            pass
        finally:
            conn.close()

    def _connection(self, conn: socket.socket, tcp: bool, who: str) -> None:
        with self._open_lock:
            self._open.add(conn)
        actor = None
        fds: list[int] = []
        served = False
        try:
            conn.settimeout(FIRST_REQUEST_SECONDS)  # lifted once the first request is answered
            conn.sendall(self._hello)
            if not tcp:
                actor = who
            buf = b""
            while not self._stop.is_set():
                while b"\n" not in buf:
                    if tcp:
                        chunk = conn.recv(1 << 16)
                    else:
                        chunk, anc, _flags, _addr = conn.recvmsg(1 << 16, socket.CMSG_SPACE(MAX_FDS * 4))
                        got = array.array("i")
                        for level, kind, data in anc:
                            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                                got.frombytes(data[: len(data) - len(data) % 4])
                        if got and b"\n" not in chunk:
                            # descriptors travel with the request line they belong to; any others are
                            # closed at once, so none pile up on a connection
                            _close_all(got)
                        else:
                            fds.extend(got)
                    if not chunk:
                        return
                    buf += chunk
                    if len(buf) > MAX_LINE and b"\n" not in buf[: MAX_LINE + 1]:
                        self._send(
                            conn,
                            None,
                            False,
                            {"code": "too_large", "message": f"a request line may hold at most {MAX_LINE} bytes"},
                        )
                        return  # the stream cannot be resynchronised: close this connection only
                line, _, buf = buf.partition(b"\n")
                req_fds, fds = fds, []
                try:
                    answer_id, ok, payload = self._request(line, actor, conn, req_fds, tcp)
                finally:
                    _close_all(req_fds)
                if ok == "auth":
                    actor = payload
                    self._release(who)  # a signed-in TCP user counts as that user from now on
                    who = actor
                    with self._open_lock:
                        self._per_user[who] = self._per_user.get(who, 0) + 1
                    self._send(conn, answer_id, True, {"actor": actor})
                    conn.settimeout(None)
                    continue
                self._send(conn, answer_id, ok, payload)
                if not served and actor is not None:
                    served = True
                    conn.settimeout(None)  # a client that has spoken may stay connected, idle
        except (ConnectionError, OSError):
            return
        finally:
            _close_all(fds)
            self._release(who)
            with self._open_lock:
                self._open.discard(conn)
            try:
                conn.close()
            except OSError:
                pass
            try:
                self.db.submit(self.service.disconnected, conn)
            except RuntimeError:  # shutting down
                pass

    def _send(self, conn: socket.socket, req_id, ok: bool, payload) -> None:
        msg = {"id": req_id, "ok": bool(ok), ("data" if ok else "error"): payload}
        conn.sendall((json.dumps(msg, default=str) + "\n").encode())

    def _request(self, line: bytes, actor: str | None, conn, fds: list[int], tcp: bool):
        """-> (id, ok, data or error dict); ok == "auth" when a TCP user signed in."""
        try:
            req = loads_line(line)
        except (ValueError, RecursionError) as exc:
            return (
                None,
                False,
                {"code": "bad_request", "message": f"a request is one JSON object per line ({exc})"[:200]},
            )
        if not isinstance(req, dict):
            return None, False, {"code": "bad_request", "message": "a request is one JSON object per line"}
        req_id = req.get("id")
        if not isinstance(req_id, (int, str)) or isinstance(req_id, bool):
            req_id = None
        op, args = req.get("op"), req.get("args") or {}
        if actor is None:  # TCP: the first request signs in
            if op != "auth" or not isinstance(args, dict):
                return req_id, False, {"code": "unknown_user", "message": "sign in first: op auth with user and token"}
            user = token_user(self.dir, args.get("user"), args.get("token"))
            if user is None:
                return req_id, False, {"code": "unknown_user", "message": "unknown user or wrong token"}
            return req_id, "auth", user
        try:
            spec = OPS.get(op) if isinstance(op, str) else None
            if spec is not None and spec.file:
                data = self._file_op(op, args, actor, conn, fds, tcp)
            else:
                pool = self.reader if spec is not None and spec.reads else self.db
                data = pool.submit(self.service.handle, actor, op, args, conn=conn).result()
            return req_id, True, data
        except ApiError as exc:
            return req_id, False, exc.to_dict()
        except LabelloopError as exc:
            return req_id, False, {"code": "bad_request", "message": str(exc)}
        except Exception as exc:  # a bug answers this request and keeps serving the others
            self.log(f"labelloop serve: {op}: {type(exc).__name__}: {exc}")
            return (
                req_id,
                False,
                {"code": "internal", "message": f"the server failed on {str(op)[:40]!r}: {type(exc).__name__}"},
            )

    def _file_op(self, op: str, args, actor: str, conn, fds: list[int], tcp: bool) -> dict:
        if not isinstance(args, dict):
            raise ApiError("bad_request", "args must be an object")
        if tcp or len(fds) != 1:
            raise ApiError(
                "bad_request",
                f"{op} through the server needs the file handed over the Unix socket "
                "(labelloop import, export and model do this)",
            )
        if not self.service.allowed(actor, op):
            # the refusal (and its event) comes from the service, before any file is touched
            return self.db.submit(self.service.handle, actor, op, {**args, "path": ""}, conn=conn).result()
        private = self.dir / "cache"
        private.mkdir(exist_ok=True)
        if OPS[op].file == "in":
            name = str(args.get("source_name") or "upload.csv")
            suffix = "".join(Path(name).suffixes[-2:])[:20] or ".csv"
            fd, tmp = tempfile.mkstemp(prefix=".incoming-", suffix=suffix, dir=private)
            try:
                cfg = self.service.config
                with os.fdopen(fd, "wb") as out, os.fdopen(os.dup(fds[0]), "rb") as src:
                    _copy_bounded(src, out, cfg.max_import_mib * 2**20, name)
                if op == "import" and suffix.lower().endswith(".gz"):
                    # a gzip bomb is measured here, on this connection's thread, never on the database's
                    check_gzip(Path(tmp), cfg, shown=name)
                extra = {"rejects": None} if op == "import" else {}
                # rejected rows are written next to the private copy, never to a path the client names
                return self.db.submit(
                    self.service.handle, actor, op, {**args, "path": tmp, "source_name": name, **extra}, conn=conn
                ).result()
            finally:
                os.unlink(tmp)
        suffix = Path(str(args.get("path") or "x.parquet")).suffix[:10] or ".out"
        tmpdir = tempfile.mkdtemp(prefix=".export-", dir=private)
        tmp = os.path.join(tmpdir, "export" + suffix)
        try:
            data = self.db.submit(self.service.handle, actor, op, {**args, "path": tmp}, conn=conn).result()
            with open(tmp, "rb") as src, os.fdopen(os.dup(fds[0]), "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            data["path"] = args.get("path")
            return data
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)


def serve(
    project_dir: Path | str,
    *,
    compute: str = "process",
    tcp: tuple[str, int] | None = None,
    log=print,
    group: str | None = None,
) -> int:
    server = Server(project_dir, compute=compute, tcp=tcp, log=log, group=group)
    server.serve_forever()
    return 0
