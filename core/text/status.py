"""``labelloop status`` in words: formats the status the project API returns (no store access)."""

from __future__ import annotations

from typing import Any

from labelloop.core.measure.agreement import NAMES  # pure numbers; no store
from labelloop.core.util.textsafe import safe_line


def format_status(st: dict[str, Any]) -> str:
    """The answer of the API's ``status`` as the text ``labelloop status`` prints."""
    lines = [f"Project {st['project']}  (labels: {', '.join(st['labels'])})", ""]
    it = st["items"]
    lines.append(f"Items        {it['total']:>10,}   pool {it['pool']:,}  test {it['test']:,}  gold {it['gold']:,}")
    lines.append(f"Unlabelled   {st['pool_unlabelled']:>10,}   (pool items with no final label)")
    lines.append(
        f"Queue        {st['queue']:>10,}   items waiting in the current batch ({st['queue_audit']:,} random audit)"
    )
    lines.append(f"Events       {st['events']:>10,}")
    lines += _pool_lines(st)
    lines.append("")
    lines.append("Final labels")
    if st["final_labels"]:
        width = max(len(k) for k in st["final_labels"])
        for k, v in st["final_labels"].items():
            lines.append(f"  {k:<{width}}  {v:>10,}")
        lines.append("  decided by: " + ", ".join(f"{k} {v:,}" for k, v in st["decided_by"].items()))
    else:
        lines.append("  (none yet)")
    if st["gold_labels"]:
        lines.append("Reference labels (test/gold)")
        for g in st["gold_labels"]:
            lines.append(f"  {g['split']:<5} {g['label']:<20} {g['count']:>8,}")
    a = st["arms"]
    lines.append("")
    lines.append("Arms         human decisions by why the item was queued")
    lines.append(f"  AL strategy   {a['al']:>8,}   ({a['al_labels']:,} labels)")
    lines.append(
        f"  random audit  {a['audit']:>8,}   ({a['audit_labels']:,} labels; {a['audit_share']:.1%} of decisions, "
        f"target {st['audit_share_target']:.0%})"
    )
    lines.append(f"  cold start    {a['cold_start']:>8,}")
    if st["corrections"]:
        total = sum(st["corrections"].values())
        lines.append(f"Corrections  {total:>10,}   " + ", ".join(f"{k} {v:,}" for k, v in st["corrections"].items()))
    lines.append("")
    lines.append("Annotators")
    if st["annotators"]:
        lines.append(f"  {'who':<16} {'labels':>7} {'skips':>6} {'flags':>6} {'undone':>7} {'median s':>9}  last")
        for a in st["annotators"]:
            med = f"{a['median_ms'] / 1000:.1f}" if a["median_ms"] is not None else "-"
            lines.append(
                f"  {a['actor']:<16} {a['labels']:>7,} {a['skips']:>6,} {a['flags']:>6,} {a['undone']:>7,} {med:>9}  {a['last_at'] or '-'}"
            )
    else:
        lines.append("  (no human decisions yet)")
    lines.extend(agreement_lines(st.get("agreement")))
    gold = st.get("gold") or {}
    if gold:
        lines.append("Gold         accuracy on gold items per annotator (95 % Wilson interval)")
        for actor, g in sorted(gold.items()):
            flag = "  BELOW THRESHOLD" if g["below_threshold"] else ""
            tiers = ", ".join(f"{k} {v['accuracy']:.0%}" for k, v in sorted(g["per_tier"].items()))
            lines.append(
                f"  {actor:<16} {g['accuracy']:.3f} [{g['low']:.3f}, {g['high']:.3f}] n={g['n']}"
                + (f"  tiers: {tiers}" if tiers else "")
                + flag
            )
    rv = st.get("review")
    if rv and rv["waiting"]:
        lines.append(
            f"Review       {rv['waiting']:,} items wait for a reviewer ("
            + ", ".join(f"{k} {v:,}" for k, v in rv["by_reason"].items())
            + ")"
        )
    if st.get("team") and st["team"].get("working"):
        t = st["team"]
        working = ", ".join(t["working"]) or "nobody"
        lines.append(
            f"Team         working now: {working}"
            + (f"; {t['open_items']:,} items open" if t.get("open_items") is not None else "")
            + ("; retraining" if t.get("retraining") else "")
        )
    lines += _model_and_warning_lines(st)
    return "\n".join(lines)


def _model_and_warning_lines(st: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    lines.append("")
    m = st["latest_model"]
    if m:
        lines.append(
            f"Model v{m['version']}  trained on {m['n_train']:,} labels, {m['calibration']} calibration, {m['created_at']}"
        )
        tm = m["test_metrics"] or {}
        if tm:
            parts = [
                f"{k} {tm[k]:.3f}"
                for k in ("accuracy", "majority_baseline", "macro_f1", "ece", "brier", "nll")
                if isinstance(tm.get(k), (int, float))
            ]
            lines.append("  test: " + ", ".join(parts) + (f" (n={tm['n_test']:,})" if tm.get("n_test") else ""))
        if isinstance(tm.get("features"), dict):
            ch = tm["features"]
            when = (
                f"; decided at {ch['decided_at']:,} labels, re-decided when they double"
                if isinstance(ch.get("decided_at"), int)
                else ""
            )
            lines.append("  " + describe(ch) + when)
        if isinstance(tm.get("bandit"), dict):
            lines.append("  " + bandit_line(tm["bandit"]))
    else:
        lines.append("Model        none trained yet (labelloop train DIR)")
    signs = st.get("warnings") or []
    fired = [w for w in signs if w.get("fires")]
    if signs:
        lines.append("")
        lines.append(
            f"Warnings     {len(fired)} of {len(signs)} warning signs" + (":" if fired else " (labelloop check DIR)")
        )
        for w in fired:
            lines.append(f"  {w['key']}: {w['rule']}; {w['todo']}")
    return lines


def _stat(r: dict) -> str:
    if r.get("value") is None:
        return f"undefined ({r.get('reason')})"
    ci = f" [{r['low']:.3f}, {r['high']:.3f}]" if r.get("low") is not None else ""
    return f"{r['value']:.3f}{ci}"


def agreement_lines(ag: dict | None) -> list[str]:
    """Agreement between annotators with 95 % bootstrap intervals over items, and AL vs audit items."""
    if not ag:
        return []
    lines = [
        "",
        f"Agreement    {ag['n_items_overlap']:,} items labelled by two or more annotators"
        + (" (95 % bootstrap intervals over items)" if ag["n_items_overlap"] else ""),
    ]
    if not ag["n_items_overlap"]:
        lines.append("  none yet: items get a second annotator at [team] overlap_share")
        return lines
    for k, r in ag["overall"].items():
        lines.append(f"  {NAMES.get(k, k):<22} {_stat(r)}")
    prev = ", ".join(f"{c} {p:.1%}" for c, p in ag["prevalence"].items())
    lines.append(f"  class prevalence       {prev}")
    arms = ag.get("by_arm") or {}
    for arm, name in (("al", "AL-selected items"), ("audit", "random-audit items"), ("cold", "cold-start items")):
        if arm in arms:
            r = arms[arm]["percent"]
            lines.append(f"  {name:<22} {_stat(r)} (n={r['n_items']})")
    return lines


def bandit_line(state: dict) -> str:
    """One line: strategy auto's shares after this model version, and what they rest on."""
    from labelloop.core.engine.auto import shares_line

    note = state.get("note")
    return f"strategy auto: shares {shares_line(state)}" + (f" ({note})" if note else "")


def describe(choice: dict) -> str:
    """One line: a model version's features and the evidence they were chosen on (core/engine/featuresel.py)."""
    if not choice:
        return ""
    c = choice.get("C")
    head = f"features {choice.get('name')}" + (f" (C={c:g})" if isinstance(c, (int, float)) else "")
    ev = choice.get("evidence") or {}
    if not ev:
        return f"{head}: {choice.get('reason', '')}"
    parts = ", ".join(f"{k} {v[0]:.3f}±{v[1]:.3f}" if v and v[0] is not None else f"{k} n/a" for k, v in ev.items())
    return f"{head}, by {choice.get('reason', '')}: {parts}"


def _pool_lines(st: dict) -> list[str]:
    """Where the pool is (an external one: its files) and where its work runs."""
    ext = st.get("pool_external")
    out = []
    if ext:
        out.append(
            f"External pool {ext['items']:>9,}   items in {ext['files']} Parquet file(s) at {safe_line(ext['folder'], 60)}"
        )
    return out + [f"Compute      {compute_line(st.get('compute', ''))}"]


def compute_line(setting: str) -> str:
    if not setting:
        return "in this process ([compute] cluster unset)"
    if setting.startswith("local:"):
        return (
            f"a local Dask cluster of {setting.split(':', 1)[1]} worker process(es) ({setting}), started by a retrain"
        )
    return f"the Dask scheduler at {setting}"


def format_readiness(r: dict) -> str:
    """The answer of the API's ``check`` as the text ``labelloop check`` prints."""
    lines = ["Readiness", ""]
    if r.get("pool_external"):
        ext = r["pool_external"]
        lines.append(
            f"  pool: external, {ext['items']:,} items in {ext['files']} file(s) at {safe_line(ext['folder'], 60)}"
        )
    if r.get("compute"):
        lines += [f"  compute: {r['compute']}", ""]
    for c in r["checks"]:
        lines.append(f"  [{c['status'].upper():>4}] {c['name']:<24} {c['detail']} (threshold {c['threshold']})")
        if c["todo"] and c["status"] in ("warn", "fail", "n/a"):
            lines.append(f"         -> {c['todo']}")
    lines += ["", "Warning signs"]
    for w in r["warnings"]:
        v = w["value"]
        val = "n/a" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))
        lines.append(f"  [{'WARN' if w['fires'] else ' ok '}] {w['key']:<22} value {val}: {w['rule']}")
        if w["fires"]:
            lines.append(f"         -> {w['todo']}")
    from labelloop.core.measure.signs import target_lines

    rows = r.get("measurements") or []
    live = target_lines(rows[-1].get("arms") if rows else None)
    if live:
        lines += ["", "AL against the random-audit arm at several targets (latest version, equal budgets)"]
        lines += [f"  {x}" for x in live]
    return "\n".join(lines)
