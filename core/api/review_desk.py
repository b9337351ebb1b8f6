"""The reviewer's desk: which items need a reviewer and why, every version of one item, the reviewer's
decision (adjudicate), its undo, and sending an item back to its annotators with a reason."""

from __future__ import annotations

import json

from labelloop.core.api.assign import Slot
from labelloop.core.api.protocol import ApiError
from labelloop.core.store import review


class ReviewDesk:
    """``service`` gives the store, the config, the assignment and the client message ids."""

    def __init__(self, service):
        self.service = service

    def reasons(self, c: dict) -> list[str]:
        """Why an item needs a reviewer (empty: it does not): annotators disagree once everyone it needs
        has labelled (with the tie-breaker too, when configured), they agree against a confident model,
        or someone flagged it."""
        cfg, assign = self.service.config, self.service.assign
        reasons = []
        labels = c["labels"]
        if len(labels) >= 2:
            probe = Slot(c["item_id"], {}, assign.need(c["item_id"]))
            probe.labelled = dict(zip(c["actors"], labels))
            assign.adjust_need(probe)
            distinct = set(labels)
            if len(distinct) > 1 and len(labels) >= probe.need:
                reasons.append("disagreement")
            elif len(distinct) == 1:
                probs = json.loads(c["probs"]) if c.get("probs") else {}
                top = max(probs, key=probs.get) if probs else None
                if top is not None and not cfg.multi_label and top != labels[0] and probs[top] >= cfg.dissent_threshold:
                    reasons.append(f"model dissent ({top} {probs[top]:.2f})")
                elif cfg.review_unanimous:
                    reasons.append("unanimous (review_unanimous = true)")
        if c["n_flags"]:
            reasons.append("flagged")
        return reasons

    def queue(self, include_decided: bool = False) -> dict:
        """Items waiting for a reviewer, with why, and the counts by reason."""
        items, counts = [], {}
        for c in review.candidates(self.service.store):
            reasons = self.reasons(c)
            if not reasons or (c["adjudicated"] and not include_decided):
                continue
            for r in reasons:
                key = r.split(" (")[0]
                counts[key] = counts.get(key, 0) + 1
            items.append(
                {
                    "item_id": c["item_id"],
                    "reasons": reasons,
                    "annotators": c["actors"],
                    "labels": c["labels"],
                    "n_flags": c["n_flags"],
                    "audit": bool(c["audit"]),
                    "adjudicated": bool(c["adjudicated"]),
                }
            )
        return {"items": items, "counts": counts}

    def item(self, item_id: str) -> dict:
        v = review.versions(self.service.store, item_id)
        if v is None:
            raise ApiError("unknown_item", f"there is no item {item_id[:60]!r} in this project")
        return v

    def adjudicate(self, actor: str, item_id: str, labels: list, msg_id: str, rationale: str | None) -> dict:
        """The reviewer's decision: the final labels of the item and why (an ``adjudicate`` event)."""
        svc = self.service
        svc.check_msg_id(msg_id, "an adjudication")
        done = svc.msgs.get((actor, msg_id))
        if done is not None:
            return {"event_id": done, "duplicate": True}
        if not svc.store.item_exists(item_id):
            raise ApiError("unknown_item", f"there is no item {item_id[:60]!r} in this project")
        labels = svc.check_labels(labels)
        event_id = svc.store.append_event(
            item_id, "adjudicate", actor, via="review", labels=labels, note=rationale or None, client_msg_id=msg_id
        )
        svc.msgs[(actor, msg_id)] = event_id
        return {"event_id": event_id, "duplicate": False}

    def undo(self, actor: str, msg_id: str) -> dict:
        """Take back this reviewer's latest adjudication or send-back still standing (any depth); the
        item returns to the review queue."""
        svc = self.service
        svc.check_msg_id(msg_id, "an undo")
        if (actor, msg_id) in svc.msgs:
            return {"undone": None, "duplicate": True}
        last = review.latest_adjudication(svc.store, actor)
        sent = review.latest_send_back(svc.store, actor)
        if sent is not None and (last is None or sent["last_event"] > last["event_id"]):
            return self._undo_send_back(actor, sent, msg_id)
        if last is None:
            return {"undone": None, "duplicate": False}
        event_id = svc.store.append_event(
            last["item_id"], "undo", actor, target_event=last["event_id"], client_msg_id=msg_id
        )
        svc.msgs[(actor, msg_id)] = event_id
        return {"undone": last["item_id"], "duplicate": False, "what": "adjudication"}

    def _undo_send_back(self, actor: str, sent: dict, msg_id: str) -> dict:
        """Take back a send-back: its undo events are undone (the annotators' labels stand again) and
        the item is no longer owed to them."""
        svc = self.service
        item_id = sent["item_id"]
        first = None
        with svc.store.transaction():
            for k, u in enumerate(sent["undos"]):
                eid = svc.store.append_event(
                    item_id, "undo", actor, target_event=u["event_id"], client_msg_id=msg_id if k == 0 else None
                )
                first = first or eid
        svc.msgs[(actor, msg_id)] = first
        slot = svc.assign.slots.get(item_id)
        if slot is not None:
            for u in sent["undos"]:
                labels = "|".join(u["labels"]) if u["labels"] else None
                svc.assign.record(u["who"], item_id, u["kind"], labels)
            slot.row = {k: v for k, v in slot.row.items() if k != "review_note"}
        return {"undone": item_id, "duplicate": False, "what": "send_back"}

    def send_back(self, actor: str, item_id: str, reason: str, msg_id: str) -> dict:
        """The reviewer returns an item to its annotators with a reason: their labels are taken back
        (undo events by the reviewer, the reason in each) and the item is served again first, the
        reason shown with it."""
        svc = self.service
        svc.check_msg_id(msg_id, "sending back")
        if (actor, msg_id) in svc.msgs:
            return {"item_id": item_id, "duplicate": True}
        if not reason.strip():
            raise ApiError("bad_request", "say why the item goes back (the annotators will see it)")
        if not svc.store.item_exists(item_id):
            raise ApiError("unknown_item", f"there is no item {item_id[:60]!r} in this project")
        standing = review.standing_labels(svc.store, item_id)
        if not standing:
            raise ApiError("bad_request", "nobody's label stands on this item; there is nothing to send back")
        note = f"sent back: {reason.strip()}"[:500]
        first = None
        with svc.store.transaction():
            for k, (event_id, _who, _kind) in enumerate(standing):
                eid = svc.store.append_event(
                    item_id, "undo", actor, target_event=event_id, note=note, client_msg_id=msg_id if k == 0 else None
                )
                first = first or eid
        svc.msgs[(actor, msg_id)] = first
        assign = svc.assign
        rows = svc.store.queue_rows(item_ids=[item_id])
        slot = assign.slots.get(item_id)
        if slot is None and rows:
            slot = Slot(item_id, rows[0], assign.need(item_id))
        if slot is not None:
            for _e, who, kind in standing:
                slot.labelled.pop(who, None) if kind == "label" else slot.passed.pop(who, None)
            slot.row = {**slot.row, "review_note": reason.strip()[:300]}
            assign.adjust_need(slot)
            assign.slots = {item_id: slot, **{k: v for k, v in assign.slots.items() if k != item_id}}
        return {"item_id": item_id, "duplicate": False, "undone": len(standing)}
