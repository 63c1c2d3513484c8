"""The deterministic held-out split: a sample belongs to it by a hash of its image path (or WebDataset key).

The same image always lands on the same side, whatever the manifest's order, the number of processes
or the machine, so a checkpoint's held-out images can be found again at evaluation and export time from
its config alone. Every caption of one image shares its side (the hash is of the image, not the row).
"""

from __future__ import annotations

import hashlib
from typing import Literal

Split = Literal["all", "train", "heldout"]
SPLITS: tuple[Split, ...] = ("all", "train", "heldout")


def holdout_position(key: str) -> float:
    """Where ``key`` falls in [0, 1): the first 8 bytes of its sha256, as a fraction."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def in_split(key: str, split: Split, fraction: float) -> bool:
    """Whether the sample named ``key`` belongs to ``split`` when ``fraction`` of samples are held out."""
    if split == "all":
        return True
    heldout = holdout_position(key) < fraction
    return heldout if split == "heldout" else not heldout
