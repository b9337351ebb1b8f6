"""The queue as each annotator meets it: which items are owed labels and in what order (the
assignment, read from the store on first use and renewed with every batch), an item as its annotator
sees it (blind or with the model's view), the lease proof that survives a restart, and the suggestion
a decision is compared with."""

from __future__ import annotations

import hashlib
import hmac
import json
import os

from labelloop.core.api.assign import Assignment, Slot
from labelloop.core.store import Store
from labelloop.core.util.safeio import atomic_write_bytes


class QueueDesk:
    """``svc`` gives the config, the store, the lock, the clock and the batch being served."""

    def __init__(self, svc):
        self.svc = svc
        self._assign: Assignment | None = None
        self._key: bytes | None = None

    @property
    def loaded(self) -> bool:
        return self._assign is not None

    @property
    def assign(self) -> Assignment:
        """Who labels what: read from the store on first use (a one-off ``status`` never needs it)."""
        if self._assign is None:
            cfg = self.svc.config
            self._assign = Assignment(
                share=cfg.overlap_share,
                per_item=cfg.annotators_per_item,
                lease_seconds=cfg.lease_minutes * 60,
                skip_hides=cfg.skip_hides,
                flag_hides=cfg.flag_hides,
                tie_breaker=cfg.tie_breaker,
            )
            self._load(self.svc.store)
        return self._assign

    def _load(self, store: Store) -> None:
        """From the store: items owed labels (started, not complete), then the latest batch."""
        decisions = store.decisions_on(None)
        per_item: dict[str, list] = {}
        for d in decisions:
            per_item.setdefault(d[0], []).append(d)
        owed = []
        for item_id, ds in per_item.items():
            probe = Slot(item_id, {}, self._assign.need(item_id))
            for _i, a, k, lab in ds:
                if k == "label":
                    probe.labelled[a] = lab
                else:
                    probe.passed[a] = k
            self._assign.adjust_need(probe)
            if not self._assign.complete(probe):
                owed.append(item_id)
        from labelloop.core.store import review

        back = review.sent_back(store)  # items a reviewer sent back: served first, with the reason
        rows = store.queue_rows(item_ids=list(back) + owed)
        for r in rows:
            if r["item_id"] in back:
                r["review_note"] = back[r["item_id"]]
        rows.sort(key=lambda r: (r["item_id"] not in back, r["batch_id"], r["position"]))
        if self.svc.batch_id is not None:
            rows += store.queue_rows(batch_id=self.svc.batch_id)
        ids = {r["item_id"] for r in rows}
        self._assign.load(rows, [d for d in decisions if d[0] in ids])

    def new_batch(self, store: Store) -> None:
        """Serve the batch a retrain queued. Its rows (the slow read: a join with every item) are read
        before taking the lock; the decisions on them under it, so none made meanwhile is missed."""
        batch = store.latest_batch_id()
        if batch == self.svc.batch_id:
            return
        rows = store.queue_rows(batch_id=batch)
        with self.svc.lock:
            if self._assign is None:  # nobody asked for work yet: the first request reads the new batch
                self.svc.batch_id = batch
                return
            self.assign.new_batch(rows, store.decisions_on([r["item_id"] for r in rows]), self.svc.clock())
            self.svc.batch_id = batch

    def blind(self, actor: str, item_id: str) -> bool:
        """A stable share of items (per annotator) is shown without the suggestion, to measure anchoring."""
        share = self.svc.config.blind_share
        if share <= 0:
            return False
        h = hashlib.sha1(f"{actor}\0{item_id}".encode("utf-8", "surrogatepass")).digest()
        return int.from_bytes(h[:8], "big") / 2**64 < share

    def item(self, actor: str, row: dict) -> dict:
        """An item as its annotator sees it: text, why it was chosen and the model's view (none of
        it when the item is blind for them, and never anyone else's label)."""
        probs = json.loads(row["probs"]) if row.get("probs") else {}
        meta = json.loads(row["metadata"]) if row.get("metadata") else {}
        hidden = bool(probs) and self.blind(actor, row["item_id"])
        return {
            "item_id": row["item_id"],
            "text": row["text"],
            "lease": self.lease_proof(actor, row["item_id"]),
            "metadata": meta if isinstance(meta, dict) else {"value": meta},
            "batch_id": row.get("batch_id"),
            "position": row.get("position"),
            "strategy": row.get("strategy"),
            "score": row.get("score"),
            "rank": row.get("rank"),
            "percentile": row.get("percentile"),
            "audit": bool(row.get("audit")),
            "model_version": row.get("model_version"),
            "probs": {} if hidden else probs,
            "suggestion_hidden": hidden,
            "multi_label": self.svc.config.multi_label,
            "review_note": row.get("review_note"),
        }

    def lease_proof(self, actor: str, item_id: str) -> str:
        """Proof that this project's server handed ``item_id`` to ``actor``: a keyed hash whose key
        (cache/lease.key, readable by the owner only) survives a restart, unlike the leases."""
        msg = f"{actor}\0{item_id}".encode("utf-8", "surrogatepass")
        return hmac.new(self._lease_key, msg, hashlib.sha256).hexdigest()[:32]

    def lease_proof_ok(self, actor: str, item_id: str, proof) -> bool:
        return isinstance(proof, str) and hmac.compare_digest(proof, self.lease_proof(actor, item_id))

    @property
    def _lease_key(self) -> bytes:
        if self._key is None:
            path = self.svc.project.cache_dir / "lease.key"
            try:
                key = path.read_bytes()
            except FileNotFoundError:
                key = b""
            if len(key) != 32:
                key = os.urandom(32)
                path.parent.mkdir(exist_ok=True)
                atomic_write_bytes(path, key, mode=0o600)
            self._key = key
        return self._key

    def suggested(self, actor: str, row: dict) -> list[str]:
        """The labels the annotator saw suggested ([] when none was shown)."""
        if not row.get("probs") or self.blind(actor, row["item_id"]):
            return []
        probs = json.loads(row["probs"])
        if self.svc.config.multi_label:
            return sorted(k for k, p in probs.items() if p >= 0.5)
        return [max(probs, key=probs.get)] if probs else []
