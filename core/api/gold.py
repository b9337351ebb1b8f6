"""Gold items: a share of every annotator's items drawn blind from the gold split, never skipped, never
in training or the arms; accuracy on them per annotator, and the pause of ``[team] gold_pause``."""

from __future__ import annotations

import hashlib
import json

from labelloop.core.api.protocol import ApiError
from labelloop.core.store import review


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float, float]:
    """A proportion and its Wilson score interval (sound for small n and for 0 or n successes)."""
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / denom
    return p, max(0.0, centre - half), min(1.0, centre + half)


class GoldDesk:
    """Which gold item each annotator holds or is due, what they answered, and who is paused.
    ``service`` gives the store, the config, the lease proof and the message ids."""

    def __init__(self, service):
        self.service = service
        self._state: dict | None = None

    @property
    def state(self) -> dict:
        """items (the gold split), done (per actor), hold (the item each actor has in hand), since
        (decisions since each actor's last gold item), score (per actor, re-read after an answer)."""
        if self._state is None:
            done: dict[str, set] = {}
            for a, i in review.gold_done(self.service.store):
                done.setdefault(a, set()).add(i)
            self._state = {
                "items": review.gold_items(self.service.store),
                "done": done,
                "hold": {},
                "since": {},
                "score": {},
            }
        return self._state

    def held(self, actor: str, item_id: str) -> dict | None:
        """The gold item ``item_id`` when ``actor`` holds it."""
        if self._state is None:
            return None
        gold = self._state["hold"].get(actor)
        return gold if gold is not None and gold["item_id"] == item_id else None

    def counted(self, actor: str) -> None:
        """One more pool decision of ``actor`` since their last gold item."""
        if self._state is not None:
            self._state["since"][actor] = self._state["since"].get(actor, 0) + 1

    def due(self, actor: str) -> dict | None:
        """The gold item this actor holds, or one now due (every 1/gold_share items), or None."""
        share = self.service.config.gold_share
        if share <= 0:
            return None
        g = self.state
        if not g["items"]:
            return None
        held = g["hold"].get(actor)
        if held is not None:
            return held
        every = max(2, round(1 / share))
        if g["since"].get(actor, 0) < every - 1:
            return None
        done = g["done"].get(actor, set())
        fresh = [r for r in g["items"] if r["item_id"] not in done]
        if not fresh:
            return None
        pick = fresh[int(hashlib.sha1(f"{actor}\0{len(done)}".encode()).hexdigest(), 16) % len(fresh)]
        g["hold"][actor] = pick
        return pick

    def item(self, actor: str, row: dict) -> dict:
        """A gold item as the annotator sees it: like any item without a suggestion shown."""
        meta = json.loads(row["metadata"]) if row.get("metadata") else {}
        return {
            "item_id": row["item_id"],
            "text": row["text"],
            "lease": self.service.queue.lease_proof(actor, row["item_id"]),
            "metadata": meta if isinstance(meta, dict) else {"value": meta},
            "batch_id": None,
            "position": None,
            "strategy": "random",
            "score": None,
            "rank": None,
            "percentile": None,
            "audit": False,
            "model_version": None,
            "probs": {},
            "suggestion_hidden": True,
            "multi_label": self.service.config.multi_label,
            "review_note": None,
        }

    def decide(self, actor: str, sess, gold: dict, action: str, labels, note, duration_ms, msg_id: str) -> int:
        """Store the answer to a gold item; returns the event id."""
        if action in ("skip", "flag", "accept"):
            raise ApiError("bad_request", "this item cannot be skipped or flagged; label it as best you can")
        svc = self.service
        labels = svc.check_labels(labels)
        event_id = svc.store.append_event(
            gold["item_id"],
            "label",
            actor,
            labels=labels,
            via="key",
            note=(note or None),
            strategy="gold",
            duration_ms=float(duration_ms) if duration_ms is not None else None,
            session_id=sess.id if sess else None,
            client_msg_id=msg_id,
        )
        g = self.state
        g["hold"].pop(actor, None)
        g["done"].setdefault(actor, set()).add(gold["item_id"])
        g["since"][actor] = 0
        g["score"].pop(actor, None)  # re-read on the next request
        return event_id

    def undone(self, actor: str, item_id: str) -> dict | None:
        """An undo of a gold answer: the item comes back to this annotator first. The item as they see
        it, or None when ``item_id`` is not gold."""
        g = self.state
        gold = next((r for r in g["items"] if r["item_id"] == item_id), None)
        if gold is None:
            return None
        g["done"].get(actor, set()).discard(item_id)
        g["hold"][actor] = gold
        return self.item(actor, gold)

    def paused(self, actor: str) -> bool:
        """[team] gold_pause: 10 or more gold answers and an accuracy below gold_min_accuracy."""
        cfg = self.service.config
        if not cfg.gold_pause:
            return False
        g = self.state
        score = g["score"].get(actor)
        if score is None:
            n = k = 0
            for a, given, ref, _t in review.gold_answers(self.service.store, cfg.gold_tier_key):
                if a == actor:
                    n, k = n + 1, k + (given == ref)
            score = g["score"][actor] = (n, k)
        n, k = score
        return n >= 10 and k / n < cfg.gold_min_accuracy

    def pause_text(self, actor: str) -> str | None:
        if not self.paused(actor):
            return None
        n, k = self.state["score"][actor]
        return (
            f"{actor} is paused: {k} of {n} check items right, below the project's "
            f"{self.service.config.gold_min_accuracy:.0%} ([team] gold_pause); talk to a reviewer."
        )

    def accuracy(self, store) -> dict:
        """Accuracy on gold per annotator, with a Wilson 95 % interval, per class and per tier; who is
        below ``gold_min_accuracy``."""
        cfg = self.service.config
        per: dict = {}
        for actor, given, ref, tier in review.gold_answers(store, cfg.gold_tier_key):
            p = per.setdefault(actor, {"n": 0, "correct": 0, "per_class": {}, "per_tier": {}})
            ok = given == ref
            p["n"] += 1
            p["correct"] += ok
            for key, group in ((ref, "per_class"), (tier or "(none)", "per_tier")):
                c = p[group].setdefault(key, {"n": 0, "correct": 0})
                c["n"] += 1
                c["correct"] += ok
        for p in per.values():
            p["accuracy"], p["low"], p["high"] = wilson(p["correct"], p["n"])
            for group in ("per_class", "per_tier"):
                for c in p[group].values():
                    c["accuracy"] = c["correct"] / c["n"]
            p["below_threshold"] = p["high"] < cfg.gold_min_accuracy or (
                p["n"] >= 10 and p["accuracy"] < cfg.gold_min_accuracy
            )
        return per
