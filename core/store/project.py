"""Project folders: ``labelloop init`` and opening an existing project."""

from __future__ import annotations

import os
import pwd
import tomllib
from dataclasses import dataclass
from pathlib import Path

from labelloop.core.config import (
    CONFIG_NAME,
    ProjectConfig,
    load_config,
    parse_config,
    render_config,
    render_guidelines,
)
from labelloop.core.store import DB_NAME, Store
from labelloop.core.util.errors import ProjectError
from labelloop.core.util.safeio import atomic_write_text, set_umask


def current_actor() -> str:
    """The operating-system login is the identity (README, "Team mode"): the process's user id,
    never an environment variable (getpass.getuser() would believe LOGNAME=alice)."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # no passwd entry (some containers)
        return f"uid{os.getuid()}"


@dataclass
class Project:
    dir: Path
    config: ProjectConfig
    store: Store

    @classmethod
    def open(cls, project_dir: Path | str, *, read_only: bool = False) -> "Project":
        project_dir = Path(project_dir)
        if not project_dir.is_dir():
            raise ProjectError(
                f"{project_dir} is not a folder; create a project with: labelloop init {project_dir} --labels a,b"
            )
        config = load_config(project_dir)
        store = Store.open(project_dir, read_only=read_only)
        return cls(project_dir, config, store)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "Project":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def models_dir(self) -> Path:
        return self.dir / "models"

    @property
    def cache_dir(self) -> Path:
        return self.dir / "cache"


def parse_labels(text: str) -> list[str]:
    labels = [x.strip() for x in text.split(",")]
    if any(not x for x in labels):
        raise ProjectError(f"--labels {text!r} has an empty label; give them as --labels spam,ham")
    return labels


def init_project(
    project_dir: Path | str, labels: list[str], *, multi_label: bool = False, name: str | None = None
) -> Path:
    """Create a project folder: labelloop.toml, guidelines.md, project.duckdb."""
    project_dir = Path(project_dir)
    if (project_dir / CONFIG_NAME).exists() or (project_dir / DB_NAME).exists():
        raise ProjectError(f"{project_dir} already holds a labelloop project; choose another folder.")
    if project_dir.exists() and not project_dir.is_dir():
        raise ProjectError(f"{project_dir} exists and is not a folder.")
    name = name or project_dir.resolve().name
    text = render_config(name, labels, multi_label)
    # Validate before writing anything, so a bad label list leaves no half project behind.
    parse_config(tomllib.loads(text), project_dir / CONFIG_NAME)
    old = set_umask(0o077)  # the project is its creator's alone (serve --group opens the socket to a team)
    try:
        _create(project_dir, name, labels, text)
    finally:
        set_umask(old)
    load_config(project_dir)
    return project_dir


def _create(project_dir: Path, name: str, labels: list[str], text: str) -> None:
    project_dir.mkdir(parents=True, exist_ok=True)
    (project_dir / "models").mkdir(exist_ok=True)
    (project_dir / "cache").mkdir(exist_ok=True)
    guidelines = project_dir / "guidelines.md"
    if not guidelines.exists():
        atomic_write_text(guidelines, render_guidelines(name, labels))
    Store.open(project_dir, create=True).close()
    # The config is written last: its presence marks a complete project.
    atomic_write_text(project_dir / CONFIG_NAME, text)
