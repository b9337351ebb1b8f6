"""The server owns its folder: what ``labelloop serve`` checks before it starts, and what
``serve --group GROUP`` sets itself (``labelloop doctor DIR`` prints the same checks).

The threat is an annotator with a shell on the same machine. They reach the socket and nothing else:
the project folder, its database, config, guidelines, tokens, cache and models belong to the server's
user and nobody else may write them (the database and the secrets not read them either); the socket
lives in ``DIR/run/``, which only the server's user can write (mode 2750, group = the team), so nobody
can rename it and put a fake server in its place. A file the checks do not like stops the server with
one sentence naming the path, its mode and the command that fixes it, as PostgreSQL does for a
group-writable data directory and sshd's StrictModes for loose key files.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

RUN_DIR = "run"
"""The socket's own folder inside the project folder."""
SECRETS = ("project.duckdb", "project.duckdb.wal", "tokens.json", "cache/lease.key")
"""Files nobody but the server's user may read (the labels and the test answers, the keys)."""


@dataclass(frozen=True)
class Problem:
    path: Path
    what: str
    fix: str

    def sentence(self) -> str:
        return f"{self.path}: {self.what}; {self.fix}"


def _mode(st: os.stat_result) -> str:
    return oct(stat.S_IMODE(st.st_mode))[2:].rjust(4, "0")


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _entries(project_dir: Path):
    """The folder itself and everything below it, not following links: (path, lstat)."""
    yield project_dir, os.lstat(project_dir)
    for root, dirs, files in os.walk(project_dir, followlinks=False):
        for name in [*dirs, *files]:
            path = Path(root) / name
            try:
                yield path, os.lstat(path)
            except FileNotFoundError:
                continue


def check_folder(project_dir: Path | str, *, group: str | None = None) -> list[Problem]:
    """What is wrong with the folder for a server run by this process's user (empty: nothing). With
    ``group``, the layout ``serve --group`` sets is expected (the folder and run/ in that group)."""
    project_dir = Path(project_dir)
    me = os.geteuid()
    fix_all = f"labelloop serve {project_dir} --group GROUP sets every mode itself (or chmod go-rwx it)"
    problems = []
    secrets = {project_dir / s for s in SECRETS}
    for path, st in _entries(project_dir):
        if path.name.endswith(".sock") and stat.S_ISSOCK(st.st_mode) and path.parent.name == RUN_DIR:
            continue  # the server's own socket (0660 for the team)
        if stat.S_ISLNK(st.st_mode):
            problems.append(
                Problem(path, "is a symbolic link (a server follows none in its folder)", f"remove it: rm {path}")
            )
            continue
        if st.st_uid != me:
            problems.append(
                Problem(
                    path,
                    f"belongs to {_user(st.st_uid)}, not to {_user(me)} who runs the server",
                    f"chown {_user(me)} {path}",
                )
            )
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o022:
            problems.append(
                Problem(path, f"is writable by {'its group' if mode & 0o020 else 'others'} (mode {_mode(st)})", fix_all)
            )
        elif path in secrets and mode & 0o044:
            problems.append(
                Problem(
                    path,
                    f"is readable by {'its group' if mode & 0o040 else 'others'} "
                    f"(mode {_mode(st)}): it holds everyone's labels or keys",
                    fix_all,
                )
            )
        elif path == project_dir / RUN_DIR and group is not None and st.st_gid != grp.getgrnam(group).gr_gid:
            problems.append(Problem(path, "is not in the team's group", fix_all.replace("GROUP", group)))
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) or stat.S_ISSOCK(st.st_mode)):
            problems.append(Problem(path, "is neither a file nor a folder", f"remove it: rm {path}"))
    return problems


def secure_folder(project_dir: Path | str, group: str) -> list[str]:
    """Give the folder the team layout: everything the server's user's alone (files 0600, folders
    0700), the folder itself traversable by ``group`` (0710) and ``run/`` readable by it (2750, where
    the socket is made 0660). Links are left alone (``check_folder`` refuses them). Returns what changed."""
    project_dir = Path(project_dir)
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        from labelloop.core.util.errors import LabelloopError

        raise LabelloopError(
            f"there is no group {group!r} on this machine; create it with: sudo groupadd {group}"
        ) from None
    run = project_dir / RUN_DIR
    run.mkdir(mode=0o700, exist_ok=True)
    changed = []
    for path, st in _entries(project_dir):
        if stat.S_ISLNK(st.st_mode) or stat.S_ISSOCK(st.st_mode):
            continue
        if path in (project_dir, run):
            want_mode, want_gid = (0o710 if path == project_dir else 0o2750), gid
        else:
            want_mode, want_gid = (0o700 if stat.S_ISDIR(st.st_mode) else 0o600), st.st_gid
        if st.st_gid != want_gid:
            os.chown(path, -1, want_gid, follow_symlinks=False)
            changed.append(f"{path}: group {group}")
        if stat.S_IMODE(st.st_mode) != want_mode:
            os.chmod(path, want_mode, follow_symlinks=False)
            changed.append(f"{path}: mode {oct(want_mode)[2:].rjust(4, '0')} (was {_mode(st)})")
    return changed


def private_run_dir(project_dir: Path) -> Path:
    """``run/`` for a server without a team (only its user connects): created 0700 if missing."""
    run = Path(project_dir) / RUN_DIR
    run.mkdir(mode=0o700, exist_ok=True)
    return run


def read_text_nofollow(path: Path) -> str:
    """A text file of the folder, refusing a link in its place (O_NOFOLLOW): a link planted where the
    guidelines or the config should be is never served or trusted."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "r", encoding="utf-8-sig") as f:
        return f.read()
