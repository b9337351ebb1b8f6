"""Project configuration: ``labelloop.toml``, validated on load.

A wrong key or value raises :class:`ConfigError` naming the file, the section
and the key, e.g. ``labelloop.toml: [strategy] audit_share must be a number
between 0 and 1, got 1.5``.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labelloop.core.errors import ConfigError

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
STRATEGIES = ("random", "least_confidence", "margin", "entropy", "bald", "qbc", "cal", "diversity", "power")
COLD_STARTS = ("random", "stratified", "keyword", "typicality", "model")
CALIBRATIONS = ("temperature", "platt", "none")
# Keys the label bar hands out in order: 1-9, 0, then letters that no action uses.
RESERVED_KEYS = set("xsfuqtm?") | {"enter", "backspace"}
LABEL_KEY_ORDER = list("1234567890") + [c for c in "abcdeghijklnoprvwyz" if c not in RESERVED_KEYS]
DEFAULT_ACTION_KEYS = {
    "accept": "enter",
    "reject": "x",
    "skip": "s",
    "flag": "f",
    "undo": "u",
    "retrain": "t",
    "metrics": "m",
    "help": "question_mark",
    "quit": "q",
}
LABEL_NAME_RE = re.compile(r"^[^\s,|][^,|]*$")


@dataclass
class ProjectConfig:
    name: str
    labels: list[str]
    label_keys: dict[str, str]
    multi_label: bool = False
    ask_reason: bool = False
    guidelines: str = "guidelines.md"
    max_text_chars: int = 100_000
    taxonomy: list[str] = field(default_factory=lambda: list(DEFAULT_TAXONOMY))
    cost_per_label: float = 0.10
    seconds_per_label: float = 15.0
    compute_price_per_hour: float = 0.50
    strategy: str = "margin"
    batch_size: int = 50
    audit_share: float = 0.10
    cold_start: str = "random"
    seed_query: str = ""
    seed_size: int = 50
    min_labels_per_class: int = 10
    calibration: str = "temperature"
    class_weight: str = "none"
    retrain_every: int = 25
    blind_share: float = 0.0
    hashing_above: int = 500_000
    features: str = "auto"           # tfidf, embed, tfidf+embed, or auto (chosen by cross-validation)
    overlap_share: float = 0.10
    annotators_per_item: int = 2
    lease_minutes: float = 10.0      # an item handed to an annotator returns to the others after this long
    skip_hides: bool = False         # a skip by one annotator hides the item from everyone
    flag_hides: bool = True          # a flag by one annotator hides the item from everyone (it waits for review)
    tie_breaker: bool = False        # overlap annotators disagree: ask one more before review
    review_unanimous: bool = False   # also send items every annotator agreed on to review
    dissent_threshold: float = 0.9   # annotators agree, the model says otherwise this surely: review
    gold_share: float = 0.05         # share of each annotator's items that are gold (when gold items exist)
    gold_min_accuracy: float = 0.8   # annotators below this on gold are shown to reviewers
    gold_tier_key: str = "tier"      # metadata column with a gold item's difficulty tier
    gold_pause: bool = False         # pause annotators below gold_min_accuracy (after 10 gold items)
    admins: list[str] = field(default_factory=list)
    reviewers: list[str] = field(default_factory=list)
    annotators: list[str] = field(default_factory=list)
    action_keys: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ACTION_KEYS))
    path: Path | None = None

    def key_for(self, label: str) -> str:
        return self.label_keys[label]


# section -> key -> (attribute, checker). A checker returns the cleaned value or raises ValueError(msg).
def _str(v):
    if not isinstance(v, str):
        raise ValueError("must be a string")
    return v


def _bool(v):
    if not isinstance(v, bool):
        raise ValueError("must be true or false")
    return v


def _int_range(lo, hi=None):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
            raise ValueError(f"must be a whole number {'>= ' + str(lo) if hi is None else f'between {lo} and {hi}'}")
        return v
    return check


def _float_range(lo, hi=None):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < lo or (hi is not None and v > hi):
            raise ValueError(f"must be a number {'>= ' + str(lo) if hi is None else f'between {lo} and {hi}'}")
        return float(v)
    return check


def _choice(options):
    def check(v):
        if v not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return v
    return check


def _str_list(v):
    if not isinstance(v, list) or not all(isinstance(x, str) and x.strip() for x in v):
        raise ValueError("must be a list of non-empty strings")
    return list(v)


SCHEMA: dict[str, dict[str, tuple[str, Any]]] = {
    "project": {
        "name": ("name", _str),
        "multi_label": ("multi_label", _bool),
        "guidelines": ("guidelines", _str),
        "max_text_chars": ("max_text_chars", _int_range(1)),
    },
    "cost": {
        "per_label": ("cost_per_label", _float_range(0)),
        "seconds_per_label": ("seconds_per_label", _float_range(0)),
        "compute_price_per_hour": ("compute_price_per_hour", _float_range(0)),
    },
    "strategy": {
        "name": ("strategy", _choice(STRATEGIES)),
        "batch_size": ("batch_size", _int_range(1, 100_000)),
        "audit_share": ("audit_share", _float_range(0, 1)),
        "cold_start": ("cold_start", _choice(COLD_STARTS)),
        "seed_query": ("seed_query", _str),
        "seed_size": ("seed_size", _int_range(1)),
        "min_labels_per_class": ("min_labels_per_class", _int_range(1)),
        "calibration": ("calibration", _choice(CALIBRATIONS)),
        "class_weight": ("class_weight", _choice(("none", "balanced"))),
        "retrain_every": ("retrain_every", _int_range(0)),
        "blind_share": ("blind_share", _float_range(0, 1)),
        "hashing_above": ("hashing_above", _int_range(1)),
    },
    "features": {
        "kind": ("features", _choice(("auto", "tfidf", "embed", "tfidf+embed"))),
    },
    "team": {
        "overlap_share": ("overlap_share", _float_range(0, 1)),
        "annotators_per_item": ("annotators_per_item", _int_range(1, 20)),
        "lease_minutes": ("lease_minutes", _float_range(0.1, 24 * 60)),
        "skip_hides": ("skip_hides", _bool),
        "flag_hides": ("flag_hides", _bool),
        "tie_breaker": ("tie_breaker", _bool),
        "review_unanimous": ("review_unanimous", _bool),
        "dissent_threshold": ("dissent_threshold", _float_range(0.5, 1)),
        "gold_share": ("gold_share", _float_range(0, 0.5)),
        "gold_min_accuracy": ("gold_min_accuracy", _float_range(0, 1)),
        "gold_tier_key": ("gold_tier_key", _str),
        "gold_pause": ("gold_pause", _bool),
    },
    "roles": {
        "admins": ("admins", _str_list),
        "reviewers": ("reviewers", _str_list),
        "annotators": ("annotators", _str_list),
    },
}
TOP_LEVEL = set(SCHEMA) | {"labels", "taxonomy", "keys"}


def _fail(path: Path, where: str, msg: str) -> ConfigError:
    return ConfigError(f"{path}: {where} {msg}.")


def parse_config(data: dict, path: Path) -> ProjectConfig:
    for section in data:
        if section not in TOP_LEVEL:
            raise _fail(path, f"unknown section [{section}]", f"(known: {', '.join(sorted(TOP_LEVEL))})")
    values: dict[str, Any] = {}
    for section, keys in SCHEMA.items():
        table = data.get(section, {})
        if not isinstance(table, dict):
            raise _fail(path, f"[{section}]", "must be a table")
        for key, value in table.items():
            if key not in keys:
                raise _fail(path, f"[{section}] has an unknown key '{key}'", f"(known: {', '.join(keys)})")
            attr, check = keys[key]
            try:
                values[attr] = check(value)
            except ValueError as exc:
                raise _fail(path, f"[{section}] {key}", f"{exc}, got {value!r}") from None

    labels_table = data.get("labels")
    if not isinstance(labels_table, dict) or "names" not in labels_table:
        raise _fail(path, "[labels]", "must have names = [\"label\", ...]")
    for key in labels_table:
        if key not in ("names", "keys", "ask_reason"):
            raise _fail(path, f"[labels] has an unknown key '{key}'", "(known: names, keys, ask_reason)")
    ask_reason = labels_table.get("ask_reason", False)
    if not isinstance(ask_reason, bool):
        raise _fail(path, "[labels] ask_reason", f"must be true or false, got {ask_reason!r}")
    names = labels_table["names"]
    try:
        names = _str_list(names)
    except ValueError as exc:
        raise _fail(path, "[labels] names", f"{exc}, got {names!r}") from None
    if len(names) < 2 and not values.get("multi_label", False):
        raise _fail(path, "[labels] names", "needs at least two labels for a single-label project")
    if len(set(names)) != len(names):
        raise _fail(path, "[labels] names", "has a duplicate label")
    for name in names:
        if not LABEL_NAME_RE.match(name):
            raise _fail(path, "[labels] names", f"has {name!r}: a label may not contain ',' or '|' or start with a space")
        if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in name):
            raise _fail(path, "[labels] names", f"has {name!r}: a label may not contain control characters")
    keys = labels_table.get("keys")
    if keys is None:
        keys = default_label_keys(names)
    else:
        try:
            keys = _str_list(keys)
        except ValueError as exc:
            raise _fail(path, "[labels] keys", f"{exc}, got {keys!r}") from None
        if len(keys) != len(names):
            raise _fail(path, "[labels] keys", f"must give one key per label ({len(names)}), got {len(keys)}")
    label_keys = dict(zip(names, keys))

    taxonomy = data.get("taxonomy", {"reasons": DEFAULT_TAXONOMY})
    if not isinstance(taxonomy, dict) or set(taxonomy) - {"reasons"}:
        raise _fail(path, "[taxonomy]", "must hold only reasons = [...]")
    try:
        reasons = _str_list(taxonomy.get("reasons", DEFAULT_TAXONOMY))
    except ValueError as exc:
        raise _fail(path, "[taxonomy] reasons", str(exc)) from None
    if not reasons or len(reasons) > 9:
        raise _fail(path, "[taxonomy] reasons", "must list between 1 and 9 reasons (one digit key each)")

    action_keys = dict(DEFAULT_ACTION_KEYS)
    key_table = data.get("keys", {})
    if not isinstance(key_table, dict):
        raise _fail(path, "[keys]", "must be a table")
    for action, key in key_table.items():
        if action not in DEFAULT_ACTION_KEYS:
            raise _fail(path, f"[keys] has an unknown action '{action}'", f"(known: {', '.join(DEFAULT_ACTION_KEYS)})")
        if not isinstance(key, str) or not key:
            raise _fail(path, f"[keys] {action}", f"must be a key name, got {key!r}")
        action_keys[action] = key
    used: dict[str, str] = {}
    for owner, key in [*((f"label '{n}'", k) for n, k in label_keys.items()), *((f"action '{a}'", k) for a, k in action_keys.items())]:
        if key in used:
            raise _fail(path, "[keys]", f"key '{key}' is given to both {used[key]} and {owner}")
        used[key] = owner

    name = values.pop("name", path.parent.name if path else "project")
    return ProjectConfig(name=name, labels=names, label_keys=label_keys, taxonomy=reasons,
                         action_keys=action_keys, path=path, ask_reason=ask_reason, **values)


def default_label_keys(names: list[str]) -> list[str]:
    if len(names) > len(LABEL_KEY_ORDER):
        raise ConfigError(f"{len(names)} labels are more than the {len(LABEL_KEY_ORDER)} single keys available; give [labels] keys explicitly.")
    return LABEL_KEY_ORDER[: len(names)]


def load_config(project_dir: Path) -> ProjectConfig:
    path = Path(project_dir) / CONFIG_NAME
    if not path.exists():
        raise ConfigError(f"{path} does not exist; is {project_dir} a labelloop project? (create one with: labelloop init {project_dir} --labels a,b)")
    if not path.is_file():
        raise ConfigError(f"{path} is not a file (it is a folder or a special file); it must be the project's TOML configuration.")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
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


def render_config(name: str, labels: list[str], multi_label: bool) -> str:
    """The commented labelloop.toml that ``labelloop init`` writes."""
    keys = default_label_keys(labels)
    return f"""# labelloop project configuration. Checked on every load: an unknown key or a
# wrong value is reported with its section and name.

[project]
name = {_toml_str(name)}
multi_label = {'true' if multi_label else 'false'}
guidelines = "guidelines.md"      # shown with '?' in the workstation
max_text_chars = 100000           # longer texts are rejected at import

[labels]
names = {_toml_list(labels)}
keys = {_toml_list(keys)}          # one key per label, in the same order
ask_reason = false                # true: a label key that differs from the suggestion asks why (taxonomy)

[taxonomy]
# Why a model suggestion was wrong; picked with one digit when correcting.
reasons = {_toml_list(DEFAULT_TAXONOMY)}

[cost]
per_label = 0.10                  # money per human label
seconds_per_label = 15.0          # annotator seconds per label (for cost per accuracy point)
compute_price_per_hour = 0.50     # money per compute hour (retrain + scoring overhead)

[strategy]
name = "margin"                   # {', '.join(STRATEGIES)}
batch_size = 50
audit_share = 0.10                # share of each batch drawn at random as a control arm
cold_start = "random"             # {', '.join(COLD_STARTS)}
seed_query = ""                   # regex for keyword seeding, e.g. "free|prize|win"
seed_size = 50
min_labels_per_class = 10         # seed adequacy threshold per class
calibration = "temperature"       # {', '.join(CALIBRATIONS)}
class_weight = "none"             # none, balanced
retrain_every = 25                # decisions between automatic retrains (0 = never)
blind_share = 0.0                 # share of items shown without the model's suggestion
hashing_above = 500000            # pool size above which features are hashed (leaner, bounded memory)

[features]
# tfidf (word 1-2 + char 2-5 n-grams), embed (static sentence embeddings, WordLlama 256-d, shipped
# inside the wordllama wheel), tfidf+embed (both; the embeddings' weight chosen by cross-validation),
# or auto: each is cross-validated on the labels so far, the best is used and re-decided as labels
# double. The choice and its evidence are stored with each model version (labelloop status).
kind = "auto"

[team]
overlap_share = 0.10              # share of items labelled by more than one annotator
annotators_per_item = 2
lease_minutes = 10                # an item handed out and not decided returns to the others after this
skip_hides = false                # true: one annotator's skip hides the item from everyone
flag_hides = true                 # true: one annotator's flag hides the item from everyone (review decides)
tie_breaker = false               # true: when overlap annotators disagree, one more annotator labels first
review_unanimous = false          # true: items every annotator agreed on go to review too
dissent_threshold = 0.9           # annotators agree but the model is this sure of another label: review
gold_share = 0.05                 # share of each annotator's items drawn, blind, from the gold split
gold_min_accuracy = 0.8           # annotators below this accuracy on gold are shown to reviewers
gold_tier_key = "tier"            # the metadata column holding a gold item's difficulty tier
gold_pause = false                # true: an annotator below gold_min_accuracy (10+ gold items) is paused

[roles]
# Login names (the SSH user, read from the socket). All empty: everyone who can reach the project
# annotates and the user who runs the server is the admin. Otherwise only the users listed may connect.
# admins may do everything; reviewers annotate and export; annotators label.
admins = []
reviewers = []
annotators = []

[keys]
# Remap actions here, e.g. reject = "r". Defaults:
# accept = "enter", reject = "x", skip = "s", flag = "f", undo = "u",
# retrain = "t", metrics = "m", help = "question_mark", quit = "q"
"""


GUIDELINES_TEMPLATE = """# Annotation guidelines: {name}

Labels: {labels}

## What each label means
{label_sections}
## Hard cases
- Write down every case you had to think about, with the decision taken.

## When to skip, flag or reject the suggestion
- **Skip** (s): you cannot decide from the text alone.
- **Flag** (f): the item needs a reviewer (unclear guideline, data problem).
- **Reject** (x): the model's suggestion is wrong; pick the right label and why.
"""


def render_guidelines(name: str, labels: list[str]) -> str:
    sections = "".join(f"### {label}\n- Describe when to use '{label}', with an example.\n\n" for label in labels)
    return GUIDELINES_TEMPLATE.format(name=name, labels=", ".join(labels), label_sections=sections)
