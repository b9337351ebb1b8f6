"""The API's entry points that need no running project: create a project, build the demo project,
replay active learning against random sampling on a labelled file.

The CLI reaches core only through ``labelloop.core.api`` (this module, ``client.connect`` and
``server.serve``), ``labelloop.core.text`` (the words it prints) and ``labelloop.core.util``; these
functions are where its offline commands enter the layers below."""

from __future__ import annotations

from pathlib import Path


def create_project(
    project_dir: Path | str, labels_text: str, *, multi_label: bool = False, name: str | None = None
) -> tuple[Path, list[str]]:
    """``labelloop init``: a new project folder with the labels given as "spam,ham"."""
    from labelloop.core.store.project import init_project, parse_labels

    labels = parse_labels(labels_text)
    return init_project(project_dir, labels, multi_label=multi_label, name=name), labels


def demo_project(project_dir: Path | str) -> tuple[Path, bool]:
    """``labelloop demo``: the bundled sample project, built unless it exists. Returns (dir, created)."""
    from labelloop.core.loop.demo import build_demo

    return build_demo(project_dir)


def simulate(
    data: Path,
    text_col: str,
    label_col: str,
    options: dict,
    *,
    split_col: str | None = None,
    curves: Path | None = None,
    chart: Path | None = None,
    progress=None,
) -> str:
    """``labelloop simulate``: the replay of every strategy against random on a labelled file; writes the
    curves and the chart when asked and returns the report's text."""
    from labelloop.core.loop.simulate import SimConfig, format_report, run_simulation, write_outputs

    cfg = SimConfig(**options)
    report = run_simulation(Path(data), text_col, label_col, cfg, split_col=split_col, progress=progress)
    write_outputs(report, curves, chart)
    return format_report(report, cfg)
