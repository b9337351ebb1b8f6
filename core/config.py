"""Project configuration: ``labelloop.toml``, validated on load.

A wrong key or value raises :class:`ConfigError` naming the file, the section
and the key, e.g. ``labelloop.toml: [strategy] audit_share must be a number
between 0 and 1, got 1.5``.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, make_dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any

from labelloop.core.util.errors import ConfigError

CONFIG_NAME = "labelloop.toml"

DEFAULT_TAXONOMY = [
    "wrong class",
    "ambiguous",
    "guideline gap",
    "out of distribution",
    "data defect",
    "more than one label applies",
    "other",
]
STRATEGIES = ("random", "least_confidence", "margin", "entropy", "bald", "qbc", "cal", "diversity", "power", "auto")
COLD_STARTS = ("random", "stratified", "keyword", "typicality", "model")
CALIBRATIONS = ("temperature", "platt", "none")
# Keys the label bar hands out in order: 1-9, 0, then letters that no action uses.
RESERVED_KEYS = set("xsfuqtm?") | {"enter", "backspace"}
LABEL_KEY_ORDER = list("1234567890") + [c for c in "abcdeghijklnoprvwyz" if c not in RESERVED_KEYS]
RENAMED_ACTIONS = {"reject": "correction"}  # names of older releases, still read from a project's file
DEFAULT_ACTION_KEYS = {
    "accept": "enter",
    "correction": "x",
    "skip": "s",
    "flag": "f",
    "undo": "u",
    "retrain": "t",
    "metrics": "m",
    "help": "question_mark",
    "quit": "q",
}
LABEL_NAME_RE = re.compile(r"^[^\s,|][^,|]*$")


# -- the schema: every key of labelloop.toml, declared once -----------------------------------------------
@dataclass(frozen=True)
class Key:
    """One setting: where it lives in labelloop.toml, its type, default, range and what it does.
    The parser, its error messages, the ``labelloop.toml`` that ``init`` writes and the README's
    config reference all come from ``KEYS`` (tests/test_config.py checks the last two)."""

    section: str
    name: str
    type: type  # str, bool, int, float or list (of non-empty strings)
    default: Any
    doc: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None
    attr: str = ""  # the ProjectConfig attribute, when it is not the key's name
    valid: Any = None  # a further check of the value: raises ValueError saying what is wrong

    @property
    def field(self) -> str:
        return self.attr or self.name

    def check(self, value):
        """The value as the config holds it, or ValueError saying what is wrong."""
        t = self.type
        if t is bool and not isinstance(value, bool):
            raise ValueError("must be true or false")
        if t is str and not isinstance(value, str):
            raise ValueError("must be a string")
        if t is list and not (isinstance(value, list) and all(isinstance(x, str) and x.strip() for x in value)):
            raise ValueError("must be a list of non-empty strings")
        if t in (int, float):
            ok = not isinstance(value, bool) and isinstance(value, int if t is int else (int, float))
            if not ok or (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
                what = "a whole number" if t is int else "a number"
                raise ValueError(f"must be {what} {self.range_text()}".rstrip())
            value = t(value)
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"must be one of {', '.join(self.choices)}")
        if self.valid is not None:
            self.valid(value)
        return list(value) if t is list else value

    def range_text(self) -> str:
        if self.choices:
            return ", ".join(self.choices)
        if self.low is not None and self.high is not None:
            return f"between {_num(self.low)} and {_num(self.high)}"
        if self.low is not None:
            return f">= {_num(self.low)}"
        return ""


CLUSTER_LOCAL_RE = re.compile(r"^local:(\d{1,3})$")
CLUSTER_ADDRESS_RE = re.compile(r"^(tcp|tls)://[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")


def check_cluster_setting(value: str) -> str:
    """``value`` when it is "", "local:N" (1 <= N <= 64) or "tcp://HOST:PORT"; ValueError otherwise."""
    if value == "" or CLUSTER_ADDRESS_RE.match(value):
        return value
    m = CLUSTER_LOCAL_RE.match(value)
    if m and 1 <= int(m.group(1)) <= 64:
        return value
    if m:
        raise ValueError("local:N wants between 1 and 64 worker processes")
    raise ValueError('must be "" (in this process), "local:N" (N worker processes here) or "tcp://HOST:PORT"')


def _num(x) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


KEYS: tuple[Key, ...] = (
    Key("project", "name", str, None, "the project's name (default: the folder's name)"),
    Key("project", "multi_label", bool, False, "true: an item may take several labels"),
    Key("project", "guidelines", str, "guidelines.md", "the guidelines file, shown with '?' in the workstation"),
    Key("project", "max_text_chars", int, 100_000, "longer texts are rejected at import", low=1),
    Key("project", "max_import_mib", int, 4096, "an import (decompressed) larger than this is refused", low=1),
    Key("project", "max_gzip_ratio", int, 200, "a .gz that expands more than this many times is refused", low=2),
    Key("labels", "ask_reason", bool, False, "true: a label key that differs from the suggestion asks why"),
    Key(
        "taxonomy",
        "reasons",
        list,
        DEFAULT_TAXONOMY,
        "why a suggestion was wrong: one digit each when correcting (1-9)",
        attr="taxonomy",
    ),
    Key("cost", "per_label", float, 0.10, "money per human label", low=0, attr="cost_per_label"),
    Key("cost", "seconds_per_label", float, 15.0, "annotator seconds per label (cost per accuracy point)", low=0),
    Key("cost", "compute_price_per_hour", float, 0.50, "money per compute hour (retrain and scoring)", low=0),
    Key("strategy", "name", str, "margin", "how the next batch is chosen", choices=STRATEGIES, attr="strategy"),
    Key("strategy", "batch_size", int, 50, "items queued per retrain", low=1, high=100_000),
    Key("strategy", "audit_share", float, 0.10, "share of each batch drawn at random as a control arm", low=0, high=1),
    Key(
        "strategy", "cold_start", str, "random", "how the first batch is chosen, before any model", choices=COLD_STARTS
    ),
    Key("strategy", "seed_query", str, "", 'regex for keyword seeding, e.g. "free|prize|win"'),
    Key("strategy", "seed_size", int, 50, "size of the cold-start batch", low=1),
    Key("strategy", "min_labels_per_class", int, 10, "seed adequacy threshold per class", low=1),
    Key("strategy", "calibration", str, "temperature", "how probabilities are calibrated", choices=CALIBRATIONS),
    Key(
        "strategy",
        "class_weight",
        str,
        "none",
        "balanced: weight classes by inverse frequency",
        choices=("none", "balanced"),
    ),
    Key("strategy", "retrain_every", int, 25, "decisions between automatic retrains (0 = never)", low=0),
    Key("strategy", "blind_share", float, 0.0, "share of items shown without the model's suggestion", low=0, high=1),
    Key("strategy", "hashing_above", int, 500_000, "pool size above which features are hashed (bounded memory)", low=1),
    Key(
        "features",
        "kind",
        str,
        "auto",
        "the features the model learns from (auto: chosen by cross-validation)",
        choices=("auto", "tfidf", "embed", "tfidf+embed"),
        attr="features",
    ),
    Key("team", "overlap_share", float, 0.10, "share of items labelled by more than one annotator", low=0, high=1),
    Key("team", "annotators_per_item", int, 2, "annotators per overlap item", low=1, high=20),
    Key(
        "team",
        "lease_minutes",
        float,
        10.0,
        "an item handed out and not decided returns to the others after this",
        low=0.1,
        high=24 * 60,
    ),
    Key("team", "skip_hides", bool, False, "true: one annotator's skip hides the item from everyone"),
    Key("team", "flag_hides", bool, True, "true: one annotator's flag hides the item from everyone (review decides)"),
    Key("team", "tie_breaker", bool, False, "true: when overlap annotators disagree, one more labels first"),
    Key("team", "review_unanimous", bool, False, "true: items every annotator agreed on go to review too"),
    Key(
        "team",
        "dissent_threshold",
        float,
        0.9,
        "annotators agree but the model is this sure of another label: review",
        low=0.5,
        high=1,
    ),
    Key(
        "team",
        "gold_share",
        float,
        0.05,
        "share of each annotator's items drawn, blind, from the gold split",
        low=0,
        high=0.5,
    ),
    Key(
        "team",
        "gold_min_accuracy",
        float,
        0.8,
        "annotators below this accuracy on gold are shown to reviewers",
        low=0,
        high=1,
    ),
    Key("team", "gold_tier_key", str, "tier", "the metadata column holding a gold item's difficulty tier"),
    Key("team", "gold_pause", bool, False, "true: an annotator below gold_min_accuracy (10+ gold items) is paused"),
    Key(
        "compute",
        "cluster",
        str,
        "",
        'where an external pool is featurised and scored: "" this process, "local:N" or "tcp://HOST:PORT" (Dask)',
        valid=check_cluster_setting,
    ),
    Key("roles", "admins", list, [], "may do everything: import, train with options, model import and export"),
    Key("roles", "reviewers", list, [], "annotate, review and export"),
    Key("roles", "annotators", list, [], "label"),
)
"""Every key of labelloop.toml but the per-project ones ([labels] names and keys) and [keys] (one
entry per action of DEFAULT_ACTION_KEYS)."""

SECTION_NOTES = {
    "features": (
        "tfidf: word 1-2 and character 2-5 n-grams; embed: static sentence embeddings (WordLlama, "
        "256-d, inside the wordllama wheel); tfidf+embed: both. auto cross-validates them on the labels "
        "so far and re-decides as labels double; the choice is stored with each model version."
    ),
    "roles": (
        "Login names (the SSH user, read from the socket). All empty: everyone who can reach the project "
        "annotates and the user who runs the server is the admin; otherwise only the users listed connect."
    ),
}
SECTIONS = ("project", "labels", "taxonomy", "cost", "strategy", "features", "team", "compute", "roles", "keys")


@dataclass
class _Fixed:
    name: str
    labels: list[str]
    label_keys: dict[str, str]


def _default(k: Key):
    if k.type is list:
        return dc_field(default_factory=lambda d=k.default: list(d))
    return dc_field(default=k.default)


ProjectConfig = make_dataclass(
    "ProjectConfig",
    [(k.field, k.type, _default(k)) for k in KEYS if k.field != "name"]
    + [
        ("action_keys", dict, dc_field(default_factory=lambda: dict(DEFAULT_ACTION_KEYS))),
        ("path", Path | None, dc_field(default=None)),
    ],
    bases=(_Fixed,),
    namespace={
        "__module__": __name__,
        "__doc__": "A project's settings: name, labels and label keys, one attribute per Key of KEYS "
        "(Key.field), the action keys and the file they came from.",
    },
)


def _fail(path: Path, where: str, msg: str) -> ConfigError:
    return ConfigError(f"{path}: {where} {msg}.")


def _scalar_sections(data: dict, path: Path) -> dict[str, Any]:
    """The values of every Key present in ``data``, checked; unknown sections and keys refused."""
    for section in data:
        if section not in SECTIONS:
            raise _fail(path, f"unknown section [{section}]", f"(known: {', '.join(sorted(SECTIONS))})")
    values: dict[str, Any] = {}
    by_section: dict[str, dict[str, Key]] = {}
    for k in KEYS:
        by_section.setdefault(k.section, {})[k.name] = k
    extra = {"labels": ("names", "keys")}
    for section, keys in by_section.items():
        table = data.get(section, {})
        if not isinstance(table, dict):
            raise _fail(path, f"[{section}]", "must be a table")
        for name, value in table.items():
            if name in extra.get(section, ()):
                continue
            if name not in keys:
                known = [*extra.get(section, ()), *keys]
                raise _fail(path, f"[{section}] has an unknown key '{name}'", f"(known: {', '.join(known)})")
            try:
                values[keys[name].field] = keys[name].check(value)
            except ValueError as exc:
                raise _fail(path, f"[{section}] {name}", f"{exc}, got {value!r}") from None
    return values


def _label_names_and_keys(data: dict, path: Path, multi_label: bool) -> dict[str, str]:
    labels_table = data.get("labels")
    if not isinstance(labels_table, dict) or "names" not in labels_table:
        raise _fail(path, "[labels]", 'must have names = ["label", ...]')
    as_list = Key("labels", "names", list, None, "")
    names = labels_table["names"]
    try:
        names = as_list.check(names)
    except ValueError as exc:
        raise _fail(path, "[labels] names", f"{exc}, got {names!r}") from None
    if len(names) < 2 and not multi_label:
        raise _fail(path, "[labels] names", "needs at least two labels for a single-label project")
    if len(set(names)) != len(names):
        raise _fail(path, "[labels] names", "has a duplicate label")
    for name in names:
        if not LABEL_NAME_RE.match(name):
            raise _fail(
                path, "[labels] names", f"has {name!r}: a label may not contain ',' or '|' or start with a space"
            )
        if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in name):
            raise _fail(path, "[labels] names", f"has {name!r}: a label may not contain control characters")
    keys = labels_table.get("keys")
    if keys is None:
        keys = default_label_keys(names)
    else:
        try:
            keys = as_list.check(keys)
        except ValueError as exc:
            raise _fail(path, "[labels] keys", f"{exc}, got {keys!r}") from None
        if len(keys) != len(names):
            raise _fail(path, "[labels] keys", f"must give one key per label ({len(names)}), got {len(keys)}")
    return dict(zip(names, keys))


def _action_keys(data: dict, path: Path, label_keys: dict[str, str]) -> dict[str, str]:
    action_keys = dict(DEFAULT_ACTION_KEYS)
    key_table = data.get("keys", {})
    if not isinstance(key_table, dict):
        raise _fail(path, "[keys]", "must be a table")
    for action, key in key_table.items():
        action = RENAMED_ACTIONS.get(action, action)
        if action not in DEFAULT_ACTION_KEYS:
            raise _fail(path, f"[keys] has an unknown action '{action}'", f"(known: {', '.join(DEFAULT_ACTION_KEYS)})")
        if not isinstance(key, str) or not key:
            raise _fail(path, f"[keys] {action}", f"must be a key name, got {key!r}")
        action_keys[action] = key
    used: dict[str, str] = {}
    for owner, key in [
        *((f"label '{n}'", k) for n, k in label_keys.items()),
        *((f"action '{a}'", k) for a, k in action_keys.items()),
    ]:
        if key in used:
            raise _fail(path, "[keys]", f"key '{key}' is given to both {used[key]} and {owner}")
        used[key] = owner
    return action_keys


def parse_config(data: dict, path: Path) -> ProjectConfig:
    """A ProjectConfig from the parsed TOML of ``path``; ConfigError naming the section and key."""
    values = _scalar_sections(data, path)
    label_keys = _label_names_and_keys(data, path, values.get("multi_label", False))
    reasons = values.get("taxonomy", DEFAULT_TAXONOMY)
    if not 1 <= len(reasons) <= 9:
        raise _fail(path, "[taxonomy] reasons", "must list between 1 and 9 reasons (one digit key each)")
    action_keys = _action_keys(data, path, label_keys)
    name = values.pop("name", None) or (path.parent.name if path else "project")
    return ProjectConfig(
        name=name, labels=list(label_keys), label_keys=label_keys, action_keys=action_keys, path=path, **values
    )


def default_label_keys(names: list[str]) -> list[str]:
    if len(names) > len(LABEL_KEY_ORDER):
        raise ConfigError(
            f"{len(names)} labels are more than the {len(LABEL_KEY_ORDER)} single keys available; give [labels] keys explicitly."
        )
    return LABEL_KEY_ORDER[: len(names)]


def load_config(project_dir: Path) -> ProjectConfig:
    path = Path(project_dir) / CONFIG_NAME
    if not path.exists():
        raise ConfigError(
            f"{path} does not exist; is {project_dir} a labelloop project? (create one with: labelloop init {project_dir} --labels a,b)"
        )
    if not path.is_file():
        raise ConfigError(
            f"{path} is not a file (it is a folder or a special file); it must be the project's TOML configuration."
        )
    try:
        # O_NOFOLLOW: a link planted in the config's place is refused, never read
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "r", encoding="utf-8-sig") as f:
            data = tomllib.loads(f.read())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}).") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text.") from None
    except OSError as exc:
        raise ConfigError(f"{path} cannot be read ({exc.strerror or exc}).") from None
    return parse_config(data, path)


def _toml_str(s: str) -> str:
    """A TOML basic string: backslash, quote and every control character escaped."""
    out = []
    for ch in s:
        if ch == "\\" or ch == '"':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(_toml_str(x) for x in items) + "]"


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return _toml_str(v)
    if isinstance(v, list):
        return _toml_list(v)
    return repr(v)


def _comment(text: str, width: int = 100) -> list[str]:
    import textwrap

    return ["# " + line for line in textwrap.wrap(text, width - 2)]


def render_config(name: str, labels: list[str], multi_label: bool) -> str:
    """The commented labelloop.toml that ``labelloop init`` writes: every key of KEYS at its default,
    with its description and range."""
    values = {("project", "name"): name, ("project", "multi_label"): multi_label}
    lines = [
        "# labelloop project configuration. Checked on every load: an unknown key or a",
        "# wrong value is reported with its section and name.",
    ]
    for section in SECTIONS:
        lines += ["", f"[{section}]"]
        lines += _comment(SECTION_NOTES[section]) if section in SECTION_NOTES else []
        if section == "labels":
            lines += [
                f"names = {_toml_list(labels)}",
                f"keys = {_toml_list(default_label_keys(labels))}  # one key per label, in the same order",
            ]
        if section == "keys":
            lines += [
                '# Remap actions here, e.g. correction = "r". Defaults:',
                *_comment(", ".join(f'{a} = "{k}"' for a, k in DEFAULT_ACTION_KEYS.items()), 120),
            ]
        for k in KEYS:
            if k.section == section:
                lines.append(_key_line(k, values.get((section, k.name), k.default)))
    return "\n".join(lines) + "\n"


def _key_line(k: Key, value) -> str:
    """``name = value  # what it does (range)``, as labelloop.toml holds a key."""
    rng = k.range_text()
    note = k.doc + (f" ({rng})" if rng and rng not in k.doc else "")
    return f"{k.name} = {_toml_value(value)}  # {note}"


def config_reference() -> str:
    """The README's config reference: a Markdown table of KEYS."""
    rows = ["| section | key | type | default | range | what it does |", "|---|---|---|---|---|---|"]
    for k in KEYS:
        default = "folder name" if k.default is None else _toml_value(k.default)
        rows.append(
            f"| `[{k.section}]` | `{k.name}` | {k.type.__name__} | `{default}` | {k.range_text() or '-'} | {k.doc} |"
        )
    return "\n".join(rows)


GUIDELINES_TEMPLATE = """# Annotation guidelines: {name}

Labels: {labels}

## What each label means
{label_sections}
## Hard cases
- Write down every case you had to think about, with the decision taken.

## When to skip, flag or correct the suggestion
- **Skip** (s): you cannot decide from the text alone.
- **Flag** (f): the item needs a reviewer (unclear guideline, data problem).
- **Correct** (x): the model's suggestion is wrong; pick the right label and why.
"""


def render_guidelines(name: str, labels: list[str]) -> str:
    sections = "".join(f"### {label}\n- Describe when to use '{label}', with an example.\n\n" for label in labels)
    return GUIDELINES_TEMPLATE.format(name=name, labels=", ".join(labels), label_sections=sections)


def settable_key(dotted: str, path: Path) -> Key:
    """The Key named ``section.name`` (as ``labelloop config set`` takes it); ConfigError otherwise."""
    section, _, name = dotted.partition(".")
    for k in KEYS:
        if k.section == section and k.name == name:
            return k
    if section in ("labels", "keys"):
        raise _fail(path, f"[{section}]", "is not set this way: labels and keys are fixed by labelloop init")
    known = ", ".join(f"{k.section}.{k.name}" for k in KEYS)
    raise _fail(path, f"'{dotted[:60]}'", f"is not a setting (known: {known})")


def parse_setting(k: Key, raw: str, path: Path):
    """A value typed on the command line: a TOML value (``0.2``, ``true``, ``["a", "b"]``, ``"x"``), or
    a bare word taken as a string; checked against the key's type and range."""
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    if k.type is str and not isinstance(value, str):
        value = raw
    try:
        return k.check(value)
    except ValueError as exc:
        raise _fail(path, f"[{k.section}] {k.name}", f"{exc}, got {raw[:80]!r}") from None


_HEADER = re.compile(r"^\s*\[\s*([A-Za-z_]+)\s*\]\s*(#.*)?$")


def with_setting(text: str, k: Key, value, path: Path) -> str:
    """The config file ``text`` with ``[k.section] k.name`` set to ``value`` (its line rewritten as
    ``init`` writes it, with its description; the rest of the file as it was), checked whole."""
    lines = text.splitlines()
    line = _key_line(k, value)
    start = next((i for i, ln in enumerate(lines) if (m := _HEADER.match(ln)) and m.group(1) == k.section), None)
    if start is None:
        lines += ["", f"[{k.section}]", line]
    else:
        end = next((i for i in range(start + 1, len(lines)) if _HEADER.match(lines[i])), len(lines))
        key_re = re.compile(rf"^\s*{re.escape(k.name)}\s*=")
        at = next((i for i in range(start + 1, end) if key_re.match(lines[i])), None)
        if at is None:
            lines.insert(start + 1, line)
        else:
            try:
                tomllib.loads(lines[at])
            except tomllib.TOMLDecodeError:
                raise _fail(
                    path, f"[{k.section}] {k.name}", "spans several lines here; edit the file as its owner"
                ) from None
            lines[at] = line
    new = "\n".join(lines) + "\n"
    parse_config(tomllib.loads(new), path)  # the whole file still holds
    return new
