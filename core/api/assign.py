"""Who labels what next: leases, overlap and the serving order (no store, no clock of its own).

The project service keeps one ``Assignment`` in memory and rebuilds it from the store when it starts
and when a retrain queues a new batch. Rules:

- An item is handed (leased) to an annotator only when they ask for work, one at a time, with an
  expiry; nothing is reserved for people who are not there. A decision releases the lease; a closed
  connection or the expiry lets others take the item (until someone does, the holder may still decide
  it: a slow annotator is not punished for a lease that nobody else wanted).
- Overlap: a stable share of items (a hash of the id, so every process agrees) needs
  ``annotators_per_item`` independent labels; the rest need one. Audit items follow the same rule, so
  agreement can be compared on AL-selected and random items.
- No starvation: while an item remains that this annotator may label (they have not decided it, it
  is not complete, and the labels given plus the leases others hold leave room), they get one.
- An annotator never sees others' labels (the item carries none) and never gets an item twice.
- A skip or a flag takes the item away from that annotator; from everyone only when the policy
  (``skip_hides`` / ``flag_hides``) says so.
- Items with labels still owed (overlap not reached, or skipped by one annotator) are carried into
  the next batch's assignment ahead of it, so nobody stops at 727 of 740.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


def overlap_need(item_id: str, share: float, per_item: int) -> int:
    """How many annotators must label this item: ``per_item`` for a stable ``share`` of ids, else 1."""
    if share <= 0 or per_item <= 1:
        return 1
    h = hashlib.sha1(b"overlap\0" + item_id.encode("utf-8", "surrogatepass")).digest()
    return per_item if int.from_bytes(h[:8], "big") / 2**64 < share else 1


@dataclass
class Slot:
    item_id: str
    row: dict  # the queue row (provenance) with the item's text
    need: int
    labelled: dict = field(default_factory=dict)  # actor -> label ("a|b" for several) of the labels standing
    passed: dict = field(default_factory=dict)  # actor -> 'skip' | 'flag'
    leases: dict = field(default_factory=dict)  # actor -> expiry (clock seconds)


class Assignment:
    def __init__(
        self,
        *,
        share: float,
        per_item: int,
        lease_seconds: float,
        skip_hides: bool,
        flag_hides: bool,
        tie_breaker: bool = False,
    ):
        self.tie_breaker = tie_breaker
        self.share = share
        self.per_item = per_item
        self.lease_seconds = lease_seconds
        self.skip_hides = skip_hides
        self.flag_hides = flag_hides
        self.slots: dict[str, Slot] = {}  # serving order: owed items first, then the batch by position
        self.front: dict[str, list[str]] = {}  # per actor: items given back by an undo, latest last

    # -- state -------------------------------------------------------------------------
    def need(self, item_id: str) -> int:
        return overlap_need(item_id, self.share, self.per_item)

    def adjust_need(self, slot: Slot) -> None:
        """With ``tie_breaker``, an overlap item whose annotators disagree asks one more annotator."""
        base = self.need(slot.item_id)
        split = len(slot.labelled) >= base and len(set(slot.labelled.values())) > 1
        slot.need = base + 1 if (self.tie_breaker and base > 1 and split) else base

    def hidden(self, slot: Slot) -> bool:
        kinds = set(slot.passed.values())
        return ("flag" in kinds and self.flag_hides) or ("skip" in kinds and self.skip_hides)

    def complete(self, slot: Slot) -> bool:
        return len(slot.labelled) >= slot.need or self.hidden(slot)

    def owed(self, slot: Slot) -> bool:
        """Started (someone decided it) but not complete: carried ahead of the next batch."""
        return not self.complete(slot) and bool(slot.labelled or slot.passed)

    def _room(self, slot: Slot, actor: str, now: float) -> bool:
        others = sum(1 for a, exp in slot.leases.items() if a != actor and exp > now)
        return len(slot.labelled) + others < slot.need

    def may_take(self, slot: Slot, actor: str, now: float) -> bool:
        return (
            not self.complete(slot)
            and actor not in slot.labelled
            and actor not in slot.passed
            and self._room(slot, actor, now)
        )

    def holds(self, actor: str, item_id: str) -> bool:
        slot = self.slots.get(item_id)
        return (
            slot is not None
            and actor in slot.leases
            and not self.complete(slot)
            and actor not in slot.labelled
            and actor not in slot.passed
        )

    # -- serving -------------------------------------------------------------------------
    def _lease(self, slot: Slot, actor: str, now: float) -> Slot:
        # expired leases of others end when someone takes the item (their holder may ask for it again)
        for a in [a for a, exp in slot.leases.items() if a != actor and exp <= now]:
            del slot.leases[a]
        slot.leases[actor] = now + self.lease_seconds
        return slot

    def next_for(self, actor: str, now: float) -> Slot | None:
        """The item this actor works on now: one an undo gave back, else the one they hold, else the
        first they may take (leased to them)."""
        front = self.front.get(actor)
        while front:
            slot = self.slots.get(front[-1])
            if slot is not None and actor not in slot.labelled and actor not in slot.passed:
                return self._lease(slot, actor, now)
            front.pop()
        for slot in self.slots.values():
            if actor in slot.leases and self.holds(actor, slot.item_id):
                if slot.leases[actor] > now or self._room(slot, actor, now):
                    return self._lease(slot, actor, now)
                del slot.leases[actor]  # expired and taken by others meanwhile
        for slot in self.slots.values():
            if self.may_take(slot, actor, now):
                return self._lease(slot, actor, now)
        return None

    def upcoming(self, actor: str, now: float, n: int) -> list[Slot]:
        """What this actor would get next, in order, without leasing anything."""
        out: list[Slot] = []
        seen: set[str] = set()
        for item_id in reversed(self.front.get(actor, [])):
            slot = self.slots.get(item_id)
            if slot is not None and item_id not in seen and actor not in slot.labelled and actor not in slot.passed:
                out.append(slot)
                seen.add(item_id)
        for slot in self.slots.values():
            if len(out) >= n:
                break
            if slot.item_id in seen:
                continue
            if self.holds(actor, slot.item_id) or self.may_take(slot, actor, now):
                out.append(slot)
                seen.add(slot.item_id)
        return out[:n]

    def left_for(self, actor: str, now: float) -> int:
        """How many items this actor may still get (asked after every decision: kept cheap)."""
        n = 0
        for s in self.slots.values():
            if not s.labelled and not s.passed and not s.leases:
                n += 1  # untouched: anyone may take it
            elif self.holds(actor, s.item_id) or self.may_take(s, actor, now):
                n += 1
        return n

    def open_count(self, now: float) -> int:
        """Items somebody could still be given (not complete)."""
        return sum(1 for s in self.slots.values() if not self.complete(s))

    # -- decisions -------------------------------------------------------------------------
    def record(self, actor: str, item_id: str, kind: str, label: str | None = None) -> None:
        slot = self.slots.get(item_id)
        if slot is None:
            return
        if kind == "label":
            slot.labelled[actor] = label
            self.adjust_need(slot)
        else:
            slot.passed[actor] = kind
        slot.leases.pop(actor, None)
        front = self.front.get(actor)
        if front and item_id in front:
            front.remove(item_id)

    def unrecord(self, actor: str, item_id: str, kind: str, row: dict | None, now: float) -> Slot | None:
        """An undo: the decision no longer stands; the item comes back to this actor first."""
        slot = self.slots.get(item_id)
        if slot is None:
            if row is None:
                return None
            slot = Slot(item_id, row, self.need(item_id))
            # an undone item goes to the front of the serving order
            self.slots = {item_id: slot, **self.slots}
        if kind == "label":
            slot.labelled.pop(actor, None)
            self.adjust_need(slot)
        else:
            slot.passed.pop(actor, None)
        self.front.setdefault(actor, []).append(item_id)
        self._lease(slot, actor, now)
        return slot

    def release(self, actor: str, now: float) -> None:
        """The actor's connection closed: others may take their items now (the actor may still decide
        them until someone does)."""
        for slot in self.slots.values():
            if actor in slot.leases:
                slot.leases[actor] = min(slot.leases[actor], now)

    def load(self, rows: list[dict], decisions: list[tuple], *, first: list[str] | None = None) -> None:
        """Add queue rows (in serving order) and the decisions already made on them. Items already
        present keep their state. ``first``: ids to serve ahead of everything else."""
        for r in rows:
            if r["item_id"] not in self.slots:
                self.slots[r["item_id"]] = Slot(r["item_id"], r, self.need(r["item_id"]))
        touched = set()
        for item_id, actor, kind, *label in decisions:
            slot = self.slots.get(item_id)
            if slot is None:
                continue
            if kind == "label":
                slot.labelled[actor] = label[0] if label else None
                touched.add(item_id)
            elif actor not in slot.labelled:
                slot.passed[actor] = kind
        for item_id in touched:
            self.adjust_need(self.slots[item_id])
        if first:
            head = {i: self.slots[i] for i in first if i in self.slots}
            self.slots = {**head, **{k: v for k, v in self.slots.items() if k not in head}}

    def new_batch(self, rows: list[dict], decisions: list[tuple], now: float) -> int:
        """A retrain queued a new batch: keep what is owed or held (held items stay where they are,
        so the item on an annotator's screen does not change), drop the rest, add the batch."""
        kept = {
            k: s
            for k, s in self.slots.items()
            if self.owed(s)
            or any(exp > now or self.holds(a, k) for a, exp in s.leases.items())
            or any(k in f for f in self.front.values())
        }
        kept = {k: s for k, s in kept.items() if not self.complete(s)}
        owed_first = sorted(kept, key=lambda k: 0 if self.owed(kept[k]) else 1)
        self.slots = {k: kept[k] for k in owed_first}
        before = len(self.slots)
        self.load(rows, decisions)
        return len(self.slots) - before
