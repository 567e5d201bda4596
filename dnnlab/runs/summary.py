"""The content of summary.json beyond what training writes: the stub of a run that ended
without its own (failed, interrupted, killed), and the one rule for how many epochs a history
holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional


def epochs_run(history: Sequence[Any]) -> int:
    """The epochs a run trained, from its records: epoch 0 is the model at initialization."""
    return max(len(history) - 1, 0)


def stub_summary(
    name: str, status: str, *, history: Sequence[Any], reason: Optional[str] = None, seed: Optional[int] = None
) -> dict[str, Any]:
    """The summary of a run that ended before training wrote one: its name (and `seed`, for a
    seed of a group), `status` (failed, interrupted), `reason` when known, and the epochs of
    `history` (its metrics.jsonl)."""
    summary: dict[str, Any] = {"name": name, **({"seed": seed} if seed is not None else {}), "status": status}
    if reason is not None:
        summary["reason"] = reason
    summary["epochs_run"] = epochs_run(history)
    return summary
