import pytest

from labelloop.core.config import CONFIG_NAME, load_config
from labelloop.core.store import SCHEMA_VERSION, Store
from labelloop.core.store.project import init_project
from labelloop.core.util.errors import ConfigError, ProjectError


def test_init_creates_project_files(tmp_path):
    d = init_project(tmp_path / "p", ["spam", "ham"])
    assert (d / "project.duckdb").exists()
    assert (d / "guidelines.md").read_text().startswith("# Annotation guidelines")
    cfg = load_config(d)
    assert cfg.labels == ["spam", "ham"]
    assert cfg.label_keys == {"spam": "1", "ham": "2"}
    assert cfg.strategy == "margin" and cfg.audit_share == 0.10
    assert "wrong class" in cfg.taxonomy and "out of distribution" in cfg.taxonomy
    assert cfg.cost_per_label > 0 and cfg.seconds_per_label > 0
    with Store.open(d) as s:
        assert s.schema_version() == SCHEMA_VERSION == 7
        tables = {r[0] for r in s.rows("SELECT table_name FROM information_schema.tables")}
        assert {
            "items",
            "events",
            "models",
            "queue",
            "batches",
            "final_labels",
            "final_decisions",
            "annotations",
            "measurements",
        } <= tables


def test_init_refuses_existing_project(tmp_path):
    init_project(tmp_path / "p", ["a", "b"])
    with pytest.raises(ProjectError, match="already holds a labelloop project"):
        init_project(tmp_path / "p", ["a", "b"])


def test_init_rejects_bad_labels_and_writes_nothing(tmp_path):
    with pytest.raises(ConfigError, match="duplicate label"):
        init_project(tmp_path / "p", ["a", "a"])
    assert not (tmp_path / "p").exists()


def test_multi_label_project(tmp_path):
    d = init_project(tmp_path / "p", ["sports", "politics", "tech"], multi_label=True)
    assert load_config(d).multi_label is True


def _rewrite(d, old, new):
    path = d / CONFIG_NAME
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


@pytest.mark.parametrize(
    "old,new,expected",
    [
        (
            "audit_share = 0.1",
            "audit_share = 1.5",
            r"\[strategy\] audit_share must be a number between 0 and 1, got 1.5",
        ),
        ('name = "margin"', 'name = "magic"', r"\[strategy\] name must be one of random, least_confidence, margin"),
        ("batch_size = 50", "batch_sise = 50", r"\[strategy\] has an unknown key 'batch_sise'"),
        ("multi_label = false", 'multi_label = "no"', r"\[project\] multi_label must be true or false"),
        ("[team]", "[teams]", r"unknown section \[teams\]"),
        ('keys = ["1", "2"]', 'keys = ["1", "x"]', r"key 'x' is given to both label 'spam'"),
        ("per_label = 0.1", "per_label = -1", r"\[cost\] per_label must be a number >= 0"),
    ],
)
def test_config_errors_name_the_key(tmp_path, old, new, expected):
    d = init_project(tmp_path / "p", ["ham", "spam"])
    _rewrite(d, old, new)
    with pytest.raises(ConfigError, match=expected) as exc:
        load_config(d)
    assert CONFIG_NAME in str(exc.value)


def test_config_not_toml(tmp_path):
    d = init_project(tmp_path / "p", ["ham", "spam"])
    (d / CONFIG_NAME).write_text("[project\nname=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(d)


def test_remapped_action_key(tmp_path):
    d = init_project(tmp_path / "p", ["ham", "spam"])
    (d / CONFIG_NAME).write_text((d / CONFIG_NAME).read_text().replace("[keys]\n", '[keys]\ncorrection = "r"\n'))
    assert load_config(d).action_keys["correction"] == "r"


def test_every_key_is_declared_once_and_the_rendered_file_and_readme_follow_the_schema(tmp_path):
    """KEYS is the one declaration: the file init writes holds every key at its default with its
    description, parses back to those defaults, and the README's reference is the schema's table."""
    import tomllib

    from labelloop.core.config import KEYS, ProjectConfig, config_reference, render_config
    from tests.conftest import ROOT

    assert len({(k.section, k.name) for k in KEYS}) == len(KEYS)
    text = render_config("p", ["ham", "spam"], False)
    data = tomllib.loads(text)
    cfg = load_config(init_project(tmp_path / "p", ["ham", "spam"]))
    for k in KEYS:
        assert k.name in data[k.section], (k.section, k.name)
        line = next(line for line in text.splitlines() if line.startswith(f"{k.name} = ") and k.doc in line)
        assert k.doc in line
        if k.default is not None:
            assert data[k.section][k.name] == k.default and getattr(cfg, k.field) == k.default, k.name
    assert {f for f in ProjectConfig.__dataclass_fields__} == {k.field for k in KEYS} | {
        "labels",
        "label_keys",
        "action_keys",
        "path",
    }
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert config_reference() in readme


@pytest.mark.parametrize(
    "key", __import__("labelloop.core.config", fromlist=["KEYS"]).KEYS, ids=lambda k: f"{k.section}.{k.name}"
)
def test_each_key_refuses_a_wrong_value_naming_section_and_key(tmp_path, key):
    import tomllib

    from labelloop.core.config import parse_config, render_config

    data = tomllib.loads(render_config("p", ["ham", "spam"], False))
    bad = {bool: "yes", int: 1.5, float: "x", list: "not a list", str: "no-such-choice" if key.choices else 5}[key.type]
    data[key.section][key.name] = bad
    with pytest.raises(ConfigError) as e:
        parse_config(data, tmp_path / CONFIG_NAME)
    assert f"[{key.section}] {key.name} must be" in str(e.value) and CONFIG_NAME in str(e.value)
