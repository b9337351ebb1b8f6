"""Which items a project has, without their features: what a choice that needs no features reads (a
random or keyword cold start), and how an item's ``ord`` maps to its row. Imports nothing heavy, so
that a fresh project's first batch does not wait for scikit-learn to load."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def rows_for_ords(all_ords: np.ndarray, ords) -> np.ndarray:
    """The rows of ``ords`` in ``all_ords`` (sorted ascending); LookupError when one is missing."""
    ords = np.asarray(ords, dtype=np.int64)
    rows = np.searchsorted(all_ords, ords)
    if len(ords) and (rows.max() >= len(all_ords) or not np.array_equal(all_ords[rows], ords)):
        raise LookupError("an item is missing from the feature cache; it will be rebuilt")
    return rows


@dataclass
class ItemKeys:
    """Row i is the item ``ids[i]`` (items in ``ord`` order); no feature matrix (``T`` is None)."""

    ids: np.ndarray  # object array
    ords: np.ndarray  # int64, ascending
    splits: np.ndarray  # 'pool' | 'test' | 'gold'
    text_hash: np.ndarray  # uint64: DuckDB's hash of each item's exact text
    T: None = None
    note: str | None = None

    def rows_for_ords(self, ords) -> np.ndarray:
        return rows_for_ords(self.ords, ords)
