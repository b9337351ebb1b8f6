"""``config_set``: the project's settings change through the server (admins only), never by editing a
file that others can reach. The change is checked like the whole file, written atomically with the
file's own mode, applied to the running service at once, and logged as a ``config`` event."""

from __future__ import annotations

import os
import stat
import tomllib

from labelloop.core.api.folder import read_text_nofollow
from labelloop.core.config import CONFIG_NAME, parse_config, parse_setting, settable_key, with_setting
from labelloop.core.util.safeio import atomic_write_text


def config_set(svc, actor: str, key: str, value: str) -> dict:
    """Set ``[section] name`` (``key`` = "section.name") to ``value`` (a TOML value or a bare word)."""
    path = svc.dir / CONFIG_NAME
    k = settable_key(key, path)
    new = parse_setting(k, value, path)
    old = getattr(svc.config, k.field)
    text = with_setting(read_text_nofollow(path), k, new, path)
    mode = stat.S_IMODE(os.lstat(path).st_mode) & 0o644  # never writable by others, whatever it was
    atomic_write_text(path, text, mode=mode)
    svc.config = parse_config(tomllib.loads(text), path)
    svc.project.config = svc.config
    event_id = svc.store.append_event("", "config", actor, note=f"[{k.section}] {k.name}: {old!r} -> {new!r}"[:500])
    return {"key": f"{k.section}.{k.name}", "old": old, "new": new, "event_id": event_id}
