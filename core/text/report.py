"""``labelloop report DIR --out DIR``: one self-contained HTML page and every figure as CSV beside it.

The page needs no network: each chart is an SVG embedded as a base64 data URI (text kept as text,
``svg.fonttype = none``), styles are inline, there is no script. Everything that comes from the
project (label names, item ids, details) is HTML-escaped on the page and ``$`` is escaped for
matplotlib (which would read ``$...$`` as mathematics): shown, never interpreted.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from datetime import datetime, timezone
from pathlib import Path

from labelloop.core.util.safeio import atomic_write, atomic_write_text
from labelloop.core.util.textsafe import safe_line

CHARTS = ("learning_curves", "arms", "reliability", "recall", "cost", "agreement")
MARKERS = "osD^v<>ph*"


def _t(s) -> str:
    """Data text for matplotlib: control characters made visible, ``$`` escaped so nothing is read
    as mathtext."""
    return safe_line(str(s), None).replace("$", r"\$")


def _h(s) -> str:
    """Data text for the page: control characters made visible, then HTML-escaped."""
    return html.escape(safe_line(str(s), None))


def _svg(fig) -> str:
    import warnings

    buf = io.BytesIO()
    with warnings.catch_warnings():  # a glyph the font lacks (e.g. a control picture) stays text in the SVG
        warnings.simplefilter("ignore", UserWarning)
        fig.savefig(buf, format="svg", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def shares_cell(shares) -> str:
    """Strategy auto's shares as "margin 0.41 · entropy 0.22 · …" (largest first); "" when absent."""
    if not isinstance(shares, dict):
        return ""
    ok = {str(k): float(v) for k, v in shares.items() if isinstance(v, (int, float))}
    return " · ".join(f"{k} {ok[k]:.2f}" for k in sorted(ok, key=lambda k: -ok[k]))


def _csv(path: Path, header: list[str], rows: list[list]) -> None:
    def write(f):
        text = io.StringIO()
        w = csv.writer(text, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
        f.write(text.getvalue().encode("utf-8"))

    atomic_write(path, write)


def _fig(title: str):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return fig, ax


def _placeholder(ax, text: str) -> None:
    """What a chart with no data yet says, wrapped to stay inside its own axes (matplotlib's own wrap
    fits the figure, so a long note ran over the y-axis label)."""
    import textwrap

    ax.text(
        0.5,
        0.5,
        textwrap.fill(_t(text), 42),
        ha="center",
        va="center",
        fontsize=9,
        transform=ax.transAxes,
        clip_on=True,
    )


def _int_x(ax) -> None:
    """Whole numbers on an x axis of label counts or versions (no tick at 24.5 labels)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _legend_outside(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)


def _chart_learning_curve(r: dict, rows: list, labels: list, out: Path) -> tuple[str, str | None]:
    """The chart (title, SVG) and CSV of: learning curve: test accuracy of every model version against labels, with the majority baseline."""
    fig, ax = _fig("Test accuracy by model version")
    pts = [
        (m["n_labels"], m.get("accuracy"), m.get("macro_f1"), m.get("majority_baseline"), m["version"])
        for m in rows
        if m.get("accuracy") is not None
    ]
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label="accuracy (all labels)")
        ax.plot([p[0] for p in pts], [p[2] for p in pts], marker="s", ls="--", label="macro-F1")
        if pts[-1][3] is not None:
            ax.axhline(pts[-1][3], color="grey", ls=":", label="majority-class baseline")
    ax.set_xlabel("labels")
    _int_x(ax)
    ax.set_ylabel("test split")
    ax.xaxis.get_major_locator().set_params(integer=True)
    _legend_outside(ax)
    chart = ("Learning curve", _svg(fig))
    _csv(
        out / "measurements.csv",
        [
            "version",
            "created_at",
            "n_labels",
            "label_cost",
            "n_al",
            "n_audit",
            "n_cold",
            "compute_seconds",
            "accuracy",
            "macro_f1",
            "majority_baseline",
            "ece",
            "ece_uncalibrated",
            "stop_kappa",
            "features",
            "auto_shares",
        ],
        [
            [
                m["version"],
                m.get("created_at"),
                m["n_labels"],
                m.get("label_cost"),
                m.get("n_al"),
                m.get("n_audit"),
                m.get("n_cold"),
                m.get("compute_seconds"),
                m.get("accuracy"),
                m.get("macro_f1"),
                m.get("majority_baseline"),
                m.get("ece"),
                m.get("ece_uncalibrated"),
                m.get("stop_kappa"),
                m.get("features"),
                shares_cell(m.get("auto_shares")),
            ]
            for m in rows
        ],
    )
    _csv(
        out / "gold_error_by_tier.csv",
        ["version", "tier", "n", "errors", "error_rate"],
        [
            [m["version"], tier, t.get("n"), t.get("errors"), t.get("error_rate")]
            for m in rows
            for tier, t in (m.get("gold_error_by_tier") or {}).items()
        ],
    )
    return chart


def _chart_arms(r: dict, rows: list, labels: list, out: Path) -> tuple[str, str | None]:
    """The chart (title, SVG) and CSV of: AL against random audit at equal budget, with bootstrap bands (latest version)."""
    fig, ax = _fig("AL vs random-audit labels at equal budget (95% bands)")
    arms = (rows[-1].get("arms") or {}) if rows else {}
    ap = arms.get("points") or []
    arm_rows = []
    if ap:
        x = [p["labels_each"] for p in ap]
        ax.plot(x, [p["al"] for p in ap], marker="o", label="AL-selected labels")
        ax.fill_between(x, [p["al_low"] for p in ap], [p["al_high"] for p in ap], alpha=0.15)
        ax.plot(x, [p["random"] for p in ap], marker="^", ls="--", label="random-audit labels")
        ax.fill_between(x, [p["random_low"] for p in ap], [p["random_high"] for p in ap], alpha=0.15)
        arm_rows = [
            [
                rows[-1]["version"],
                p["n"],
                p["labels_each"],
                p["al"],
                p["al_low"],
                p["al_high"],
                p["random"],
                p["random_low"],
                p["random_high"],
                p["diff"],
                p["diff_low"],
                p["diff_high"],
            ]
            for p in ap
        ]
    else:
        _placeholder(ax, arms.get("note") or "no comparison yet")
    ax.set_xlabel("labels per model (cold start + arm)")
    _int_x(ax)
    ax.set_ylabel("test accuracy")
    _legend_outside(ax)
    chart = ("AL against random sampling", _svg(fig))
    _csv(
        out / "arms.csv",
        [
            "version",
            "arm_labels",
            "labels_each",
            "al",
            "al_low",
            "al_high",
            "random",
            "random_low",
            "random_high",
            "diff",
            "diff_low",
            "diff_high",
        ],
        arm_rows,
    )
    return chart


def _chart_reliability(r: dict, rows: list, labels: list, out: Path) -> tuple[str, str | None]:
    """The chart (title, SVG) and CSV of: reliability diagram (latest version), and ECE over time in the CSV."""
    fig, ax = _fig("Reliability (latest model)")
    rel = (rows[-1].get("reliability") or {}) if rows else {}
    rel_rows = []
    conf, acc, counts = rel.get("bin_confidence") or [], rel.get("bin_accuracy") or [], rel.get("bin_counts") or []
    if conf:
        xs = [c for c, a in zip(conf, acc) if c is not None and a is not None]
        ys = [a for c, a in zip(conf, acc) if c is not None and a is not None]
        ax.plot([0, 1], [0, 1], color="grey", ls=":", label="perfect calibration")
        ax.plot(xs, ys, marker="o", label=f"model v{rows[-1]['version']} (ECE {rows[-1].get('ece') or 0:.3f})")
        rel_rows = [[i, c, a, n] for i, (c, a, n) in enumerate(zip(conf, acc, counts))]
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    _legend_outside(ax)
    chart = ("Calibration", _svg(fig))
    _csv(out / "reliability.csv", ["bin", "confidence", "accuracy", "count"], rel_rows)
    _csv(
        out / "ece.csv",
        ["version", "n_labels", "ece_calibrated", "ece_raw"],
        [[m["version"], m["n_labels"], m.get("ece"), m.get("ece_uncalibrated")] for m in rows],
    )
    return chart


def _chart_recall(r: dict, rows: list, labels: list, out: Path) -> tuple[str, str | None]:
    """The chart (title, SVG) and CSV of: per-class recall over versions."""
    fig, ax = _fig("Per-class recall by model version")
    rec_rows = []
    for i, c in enumerate(labels):
        series = [(m["n_labels"], ((m.get("per_class") or {}).get(c) or {}).get("recall")) for m in rows]
        series = [(n, v) for n, v in series if v is not None]
        if series:
            ax.plot([s[0] for s in series], [s[1] for s in series], marker=MARKERS[i % len(MARKERS)], label=_t(c))
        rec_rows += [
            [m["version"], m["n_labels"], c, ((m.get("per_class") or {}).get(c) or {}).get("recall")] for m in rows
        ]
    ax.set_xlabel("labels")
    _int_x(ax)
    ax.set_ylabel("recall")
    _legend_outside(ax)
    chart = ("Per-class recall", _svg(fig))
    _csv(out / "per_class_recall.csv", ["version", "n_labels", "class", "recall"], rec_rows)
    return chart


def _chart_cost(r: dict, rows: list, labels: list, out: Path) -> tuple[str, str | None]:
    """The chart (title, SVG) and CSV of: cost per accuracy point (rolling 30-day windows)."""
    fig, ax = _fig("Cost per percentage point of accuracy (30-day window)")
    cpp = r.get("cost_per_point") or []
    good = [(c["version"], c["cost_per_point"]) for c in cpp if c.get("cost_per_point") is not None]
    if good:
        ax.plot([g[0] for g in good], [g[1] for g in good], marker="D", label="money per point")
    else:
        _placeholder(ax, "no accuracy gain measured yet")
    ax.set_xlabel("model version")
    _int_x(ax)
    _legend_outside(ax)
    chart = ("Cost per accuracy point", _svg(fig))
    _csv(
        out / "cost_per_point.csv",
        ["version", "spent", "gain_points", "cost_per_point"],
        [[c["version"], c.get("spent"), c.get("gain_points"), c.get("cost_per_point")] for c in cpp],
    )
    return chart


def _chart_agreement(r: dict, rows: list, labels: list, out: Path) -> tuple[str, str | None]:
    """The chart (title, SVG) and CSV of: agreement on AL-selected against random-audit items."""
    fig, ax = _fig("Agreement between annotators (percent, 95% intervals)")
    ag = r.get("agreement") or {}
    ag_rows = []
    by_arm = ag.get("by_arm") or {}
    bars = []
    for arm, name in (("al", "AL-selected"), ("audit", "random audit"), ("cold", "cold start")):
        pct = (by_arm.get(arm) or {}).get("percent") or {}
        if pct.get("value") is not None:
            bars.append((name, pct["value"], pct.get("low"), pct.get("high"), pct.get("n_items")))
        ag_rows.append([arm, pct.get("value"), pct.get("low"), pct.get("high"), pct.get("n_items")])
    if bars:
        for i, (name, v, lo, hi, n) in enumerate(bars):
            ax.bar(
                i, v, color=["#4c72b0", "#dd8452", "#55a868"][i], hatch=["", "//", ".."][i], label=f"{name} ({n} items)"
            )
            if lo is not None and hi is not None:
                ax.errorbar(i, v, yerr=[[v - lo], [hi - v]], color="black", capsize=4)
        ax.set_xticks(range(len(bars)), [b[0] for b in bars])
        ax.set_ylim(0, 1.05)
    else:
        _placeholder(ax, "no items labelled by two annotators yet")
    _legend_outside(ax)
    chart = ("Agreement", _svg(fig))
    _csv(out / "agreement.csv", ["arm", "percent", "low", "high", "n_items"], ag_rows)
    return chart


def write_report(r: dict, out: Path) -> Path:
    """Write ``out/report.html`` and the CSV files from ``check`` output; returns the page's path."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "none"
    matplotlib.rcParams["text.usetex"] = False
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = r.get("measurements") or []
    labels = r.get("labels") or []
    charts = {
        key: draw(r, rows, labels, out)
        for key, draw in (
            ("learning_curves", _chart_learning_curve),
            ("arms", _chart_arms),
            ("reliability", _chart_reliability),
            ("recall", _chart_recall),
            ("cost", _chart_cost),
            ("agreement", _chart_agreement),
        )
    }
    checks, signs = r.get("checks") or [], r.get("warnings") or []
    _csv(
        out / "checks.csv",
        ["check", "status", "value", "threshold", "detail", "todo"],
        [[c["key"], c["status"], c["value"], c["threshold"], c["detail"], c["todo"]] for c in checks],
    )
    _csv(
        out / "warnings.csv",
        ["sign", "fires", "value", "rule", "todo"],
        [[w["key"], w["fires"], w["value"], w["rule"], w["todo"]] for w in signs],
    )
    page = out / "report.html"
    atomic_write_text(page, _page(r, rows, checks, signs, charts))
    return page


def _page(r: dict, rows: list, checks: list, signs: list, charts: dict) -> str:
    """The HTML page: the readiness checks, the warning signs and the charts as data URIs."""
    e = _h
    colour = {"pass": "#1b7f3b", "warn": "#a86b00", "fail": "#b00020", "n/a": "#666"}
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>labelloop report: {e(str(r.get('project', '')))}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;width:100%;margin:1em 0}td,th{border-bottom:1px solid #ddd;padding:4px 8px;"
        "text-align:left;vertical-align:top;font-size:14px}.s{font-weight:bold}figure{margin:1.5em 0}"
        "img{max-width:100%}</style></head><body>",
        f"<h1>Is active learning working? {e(str(r.get('project', '')))}</h1>",
        f"<p>{r.get('n_labels', 0):,} labels, {len(rows)} model versions measured. Generated "
        f"{e(datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC'))} by labelloop report; "
        "every figure is also a CSV file beside this page.</p>",
        "<h2>Readiness checks</h2><table><tr><th>check</th><th>status</th><th>measured</th><th>threshold</th>"
        "<th>what to do</th></tr>",
    ]
    for c in checks:
        parts.append(
            f"<tr><td>{e(c['name'])}</td><td class='s' style='color:{colour.get(c['status'], '#222')}'>"
            f"{e(c['status'])}</td><td>{e(c['detail'])}</td><td>{e(str(c['threshold']))}</td>"
            f"<td>{e(c['todo'] or '')}</td></tr>"
        )
    parts.append(
        "</table><h2>Warning signs</h2><table><tr><th>sign</th><th>state</th><th>value</th><th>rule</th>"
        "<th>what to do</th></tr>"
    )
    for w in signs:
        v = w["value"]
        parts.append(
            f"<tr><td>{e(w['key'])}</td><td class='s' style='color:{'#b00020' if w['fires'] else '#1b7f3b'}'>"
            f"{'fires' if w['fires'] else 'quiet'}</td><td>{e('n/a' if v is None else f'{v:.3f}' if isinstance(v, float) else str(v))}</td>"
            f"<td>{e(w['rule'])}</td><td>{e(w['todo'] if w['fires'] else '')}</td></tr>"
        )
    parts.append("</table>")
    from labelloop.core.measure.signs import target_lines

    live = target_lines(rows[-1].get("arms") if rows else None)
    if live:  # the live arms' verdict per target, with the audit arm's limit
        parts.append("<h2>AL against the random-audit arm at several targets</h2><ul>")
        parts.extend(f"<li>{e(x.strip())}</li>" for x in live)
        parts.append("</ul>")
    shares = [(m["version"], m.get("auto_shares")) for m in rows if m.get("auto_shares")]
    if shares:  # strategy auto: how the bandit split the batches, version by version
        parts.append(
            "<h2>Strategy auto: the bandit's shares</h2><p>Each batch is split among the arms by these shares "
            "(set after the model version was trained, from the arms' value on the random-audit labels and "
            "the test split); the random-audit arm is drawn apart, untouched.</p><table><tr><th>version</th>"
            "<th>shares</th></tr>"
        )
        for v, sh in shares:
            parts.append(f"<tr><td>v{v}</td><td>{e(shares_cell(sh))}</td></tr>")
        parts.append("</table>")
    parts.append("<h2>Charts</h2>")
    for key in CHARTS:
        title, data = charts[key]
        parts.append(
            f'<figure id="{key}"><figcaption><b>{e(title)}</b></figcaption>'
            f'<img alt="{e(title)}" src="data:image/svg+xml;base64,{data}"></figure>'
        )
    parts.append("</body></html>")
    return "\n".join(parts)
