"""The reads that scan the whole project (status, metrics, check): served on a cursor of their own, per
thread, outside the service lock, so that they never hold up decisions (the server runs them on its
reader thread). The learning curves by arm train small models: a thread of their own, cached per
model version."""

from __future__ import annotations

import json
import threading

from labelloop.core.store import Store
from labelloop.core.store.project import Project


class ProjectReads:
    """``service`` gives the folder, the config, the store (for cursors), the lock, the review desk,
    the gold desk and the team."""

    def __init__(self, service):
        self.service = service
        self._local = threading.local()
        self._arms: dict | None = None  # {"version": v, "arms": {...}} cached learning curves by arm
        self.arms_thread: threading.Thread | None = None

    def reader(self) -> Project:
        """A Project on this thread's own cursor."""
        local = self._local
        if getattr(local, "project", None) is None:
            svc = self.service
            local.project = Project(svc.dir, svc.config, Store(svc.store.cursor(), svc.store.path))
        return local.project

    def _scale(self) -> list[str] | None:
        """The categories agreement is measured on: the project's labels (single-label), or None for
        the label sets that occur (multi-label: each set is one nominal category)."""
        cfg = self.service.config
        return None if cfg.multi_label else list(cfg.labels)

    def metrics(self, arms: bool) -> dict:
        from labelloop.core.loop.metrics import metrics_snapshot
        from labelloop.core.measure.agreement import agreement_report
        from labelloop.core.store.reports import annotation_ratings

        reader = self.reader()
        snap = metrics_snapshot(reader)
        ratings, arms = annotation_ratings(reader.store)
        snap["agreement"] = agreement_report(ratings, categories=self._scale(), arms=arms)
        out = {"snapshot": snap, "arms": None, "arms_pending": False}
        if not arms:
            return out
        with self.service.lock:
            version = (snap.get("latest") or {}).get("version")
            cached = self._arms
            if cached is not None and cached["version"] == version:
                out["arms"] = cached["arms"]
            else:
                out["arms_pending"] = True
                if self.arms_thread is None or not self.arms_thread.is_alive():
                    self.arms_thread = threading.Thread(
                        target=self._compute_arms, args=(version,), daemon=True, name="labelloop-arms"
                    )
                    self.arms_thread.start()
        return out

    def _compute_arms(self, version) -> None:
        from labelloop.core.loop.metrics import arm_comparison

        svc = self.service
        project = Project(svc.dir, svc.config, Store(svc.store.cursor(), svc.store.path))
        try:
            arms = arm_comparison(project)
        except Exception as exc:  # e.g. no labels yet: the rest of the pane still stands
            arms = {"error": str(exc)}
        finally:
            project.store.close()
        with svc.lock:
            self._arms = {"version": version, "arms": arms}

    def check(self) -> dict:
        """The readiness checklist, the six warning signs and every version's live measurement."""
        from labelloop.core.loop.readiness import readiness

        cfg = self.service.config
        compute = compute_answer(cfg.cluster)  # first: a cluster that does not answer is the news
        r = readiness(self.reader())
        r["project"] = cfg.name
        r["labels"] = list(cfg.labels)
        r["cost"] = {
            "per_label": cfg.cost_per_label,
            "seconds_per_label": cfg.seconds_per_label,
            "compute_price_per_hour": cfg.compute_price_per_hour,
        }
        r["pool_external"] = external_summary(self.service.project.dir)
        r["compute"] = compute
        return r

    def status(self) -> dict:
        from labelloop.core.measure.agreement import agreement_report
        from labelloop.core.measure.signs import warning_signs
        from labelloop.core.store.reports import annotation_ratings, measurements, metrics_rows, project_status

        svc = self.service
        reader = self.reader()
        st = project_status(reader)
        ratings, arms = annotation_ratings(reader.store)
        full = agreement_report(ratings, categories=self._scale(), arms=arms, bootstrap=500)
        st["agreement"] = {
            k: full[k] for k in ("n_items_rated", "n_items_overlap", "annotators", "prevalence", "overall", "by_arm")
        }
        with svc.lock:
            rq = svc.review.queue()
        st["review"] = {"waiting": len(rq["items"]), "by_reason": rq["counts"]}
        st["gold"] = svc.gold.accuracy(reader.store)
        batch = metrics_rows(reader.store)["batch"]
        signals = json.loads(batch[0]["signals"]) if batch and batch[0]["signals"] else {}
        st["warnings"] = warning_signs(
            measurements(reader.store),
            agreement=full,
            signals=signals,
            batch_strategy=batch[0]["strategy"] if batch else None,
        )
        with svc.lock:
            st["team"] = svc.team()
        st["pool_external"] = external_summary(svc.project.dir)
        st["compute"] = svc.config.cluster
        return st

    def close(self) -> None:
        if self.arms_thread is not None:
            self.arms_thread.join(timeout=30)


def external_summary(project_dir) -> dict | None:
    """The registered external pool (folder, files, items), or None."""
    from labelloop.core.pool.partitions import load_manifest

    m = load_manifest(project_dir)
    return None if m is None else {"folder": m.folder, "files": len(m.partitions), "items": m.n}


def compute_answer(setting: str) -> str:
    """Where the pool's work runs, asked of the cluster itself: how many workers answer (ClusterError,
    one sentence, when it does not)."""
    if not setting:
        return "in this process"
    from labelloop.core.pool.compute import open_compute

    c = open_compute(setting)
    try:
        return c.describe()
    finally:
        c.close()
