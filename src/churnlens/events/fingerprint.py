"""The data fingerprint: one short, order-independent digest of a set of events.

Each event's canonical columns (``amount`` 0 when missing) are hashed with DuckDB's row
hash; the fingerprint digests three numbers over those hashes: their count, their XOR
and their sum modulo a prime. The three combine across partitions, chunks or Spark
buckets by adding, XOR-ing and adding again, so a log split any way has the fingerprint
of the whole: equal for the same rows in any order and any file format, different when
a row is added, removed or altered. Stable for one DuckDB version.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from churnlens.events.contract import CANONICAL_COLUMNS

PRIME = 1_000_000_007
# the hash of an event: its canonical columns as the event relation types them
ROW_HASH = (
    "hash("
    + ", ".join("coalesce(amount, 0.0)" if c == "amount" else c for c in CANONICAL_COLUMNS)
    + ")"
)


@dataclass(frozen=True)
class FingerprintParts:
    """The count, XOR and sum (mod :data:`PRIME`) of some events' row hashes."""

    n: int = 0
    xor: int = 0
    total: int = 0

    def __add__(self, other: FingerprintParts) -> FingerprintParts:
        return FingerprintParts(self.n + other.n, self.xor ^ other.xor, self.total + other.total)

    def digest(self) -> str:
        """The fingerprint: 16 hex digits."""
        return hashlib.sha256(f"{self.n}:{self.xor}:{self.total}".encode()).hexdigest()[:16]

    @staticmethod
    def sql(hashes: str) -> str:
        """The select list computing the parts over a column of row hashes."""
        return f"count({hashes}), bit_xor({hashes}), sum({hashes} % {PRIME})"

    @classmethod
    def of_row(cls, row: tuple[object, ...] | None) -> FingerprintParts:
        """The parts from one fetched row of :meth:`sql` (NULLs of an empty set as 0)."""
        n, xor, total = row or (0, 0, 0)
        return cls(int(n or 0), int(xor or 0), int(total or 0))

    @classmethod
    def of_hashes(cls, hashes: np.ndarray) -> FingerprintParts:
        """The parts of an array of unsigned 64-bit row hashes."""
        if len(hashes) == 0:
            return cls()
        xor = int(np.bitwise_xor.reduce(hashes))
        total = int((hashes % np.uint64(PRIME)).sum(dtype=np.uint64))
        return cls(len(hashes), xor, total)


def combine(parts: Iterable[FingerprintParts]) -> FingerprintParts:
    """The parts of the union of disjoint sets of events."""
    out = FingerprintParts()
    for part in parts:
        out = out + part
    return out
