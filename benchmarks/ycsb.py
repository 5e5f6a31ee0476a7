"""YCSB core workloads: key generators and operation mixes (standard library only).

Source: B. F. Cooper, A. Silberstein, E. Tam, R. Ramakrishnan, R. Sears, "Benchmarking Cloud
Serving Systems with YCSB", ACM SoCC 2010 (the paper), and the YCSB reference implementation
(``core/src/main/java/site/ycsb/generator/ZipfianGenerator.java``,
``ScrambledZipfianGenerator.java``, ``SkewedLatestGenerator.java``,
``AcknowledgedCounterGenerator.java``, ``Utils.fnvhash64`` and
``workloads/workload[a-f]``). The zipfian generator is the algorithm of Gray et al., "Quickly
Generating Billion-Record Synthetic Databases", SIGMOD 1994, as YCSB implements it, with
YCSB's zipfian constant 0.99.

This module is imported by both interpreters of the suite (the one running oaas-sdk and the
oaas-sdk2-py virtual environment), so it must import nothing outside the standard library.
"""

import math
import random
from dataclasses import dataclass

__all__ = [
    "ZIPFIAN_CONSTANT", "ZipfianGenerator", "ScrambledZipfianGenerator",
    "SkewedLatestGenerator", "UniformGenerator", "CounterGenerator", "fnvhash64",
    "Workload", "WORKLOADS", "OperationChooser", "KeyChooser",
]

#: YCSB's default zipfian constant (theta), ``ZipfianGenerator.ZIPFIAN_CONSTANT``.
ZIPFIAN_CONSTANT = 0.99

_FNV_OFFSET_BASIS_64 = 0xCBF29CE484222325
_FNV_PRIME_64 = 1099511628211
_MASK64 = (1 << 64) - 1


def fnvhash64(val: int) -> int:
    """YCSB's ``Utils.fnvhash64``: FNV-1a over the 8 low-order bytes of ``val``, returned as
    Java's ``Math.abs`` of the signed 64-bit result (a non-negative int)."""
    h = _FNV_OFFSET_BASIS_64
    val &= _MASK64
    for _ in range(8):
        h ^= val & 0xFF
        val >>= 8
        h = (h * _FNV_PRIME_64) & _MASK64
    if h >= 1 << 63:  # a negative Java long: Math.abs
        h = (1 << 64) - h
    return h


def _zeta(start: int, n: int, theta: float, initial: float) -> float:
    """``ZipfianGenerator.zetastatic``: ``initial + sum(1 / (i+1)**theta for i in [start, n))``."""
    s = initial
    for i in range(start, n):
        s += 1.0 / math.pow(i + 1, theta)
    return s


class ZipfianGenerator:
    """Integers in ``[lo, hi]`` with a zipfian distribution: ``lo`` is the most popular item.

    ``ZipfianGenerator`` of YCSB (Gray et al. 1994): ``zetan`` is the generalized harmonic
    number of the item count (computed in O(items) at construction unless given), updated
    incrementally when :meth:`next_long` is called with a larger item count (as YCSB does for
    the "latest" distribution while records are inserted).
    """

    def __init__(self, lo: int, hi: int, theta: float = ZIPFIAN_CONSTANT,
                 zetan: float | None = None, rng: random.Random | None = None) -> None:
        self.items = hi - lo + 1
        self.base = lo
        self.theta = theta
        self.rng = rng or random.Random()
        self.zeta2theta = _zeta(0, 2, theta, 0.0)
        self.alpha = 1.0 / (1.0 - theta)
        self.zetan = _zeta(0, self.items, theta, 0.0) if zetan is None else zetan
        self.countforzeta = self.items
        self.eta = self._eta()
        self.last = self.next_long(self.items)

    def _eta(self) -> float:
        # YCSB computes eta from the construction-time item count even after zetan grows.
        return (1 - math.pow(2.0 / self.items, 1 - self.theta)) / (
            1 - self.zeta2theta / self.zetan)

    def next_long(self, itemcount: int) -> int:
        """One value for a population of ``itemcount`` items (``base`` + [0, itemcount))."""
        if itemcount > self.countforzeta:
            self.zetan = _zeta(self.countforzeta, itemcount, self.theta, self.zetan)
            self.countforzeta = itemcount
            self.eta = self._eta()
        u = self.rng.random()
        uz = u * self.zetan
        if uz < 1.0:
            ret = self.base
        elif uz < 1.0 + math.pow(0.5, self.theta):
            ret = self.base + 1
        else:
            ret = self.base + int(itemcount * math.pow(self.eta * u - self.eta + 1, self.alpha))
        self.last = ret
        return ret

    def next(self) -> int:
        return self.next_long(self.items)


class ScrambledZipfianGenerator:
    """Zipfian popularity with the popular items scattered over ``[lo, hi]``.

    YCSB's ``ScrambledZipfianGenerator``: draw from a zipfian over 10^10 items (with the
    precomputed ``ZETAN`` for theta 0.99) and map it with ``lo + fnvhash64(v) % itemcount``,
    so that item popularity does not follow key order (no hot key range).
    """

    ITEM_COUNT = 10_000_000_000
    ZETAN = 26.46902820178302  # zeta(ITEM_COUNT, 0.99), from the YCSB source

    def __init__(self, lo: int, hi: int, rng: random.Random | None = None) -> None:
        self.lo = lo
        self.itemcount = hi - lo + 1
        self.gen = ZipfianGenerator(0, self.ITEM_COUNT, ZIPFIAN_CONSTANT, self.ZETAN, rng)

    def next(self) -> int:
        return self.lo + fnvhash64(self.gen.next()) % self.itemcount


class CounterGenerator:
    """YCSB's insert key sequence (``AcknowledgedCounterGenerator`` used in one thread):
    ``next()`` hands out ``start, start+1, ...``; ``last`` is the highest key inserted so far
    (``start - 1`` before any insert)."""

    def __init__(self, start: int) -> None:
        self.counter = start
        self.last = start - 1

    def next(self) -> int:
        v = self.counter
        self.counter += 1
        return v

    def acknowledge(self, v: int) -> None:
        self.last = max(self.last, v)


class SkewedLatestGenerator:
    """The "latest" distribution (workload D): recently inserted keys are the most popular.

    YCSB's ``SkewedLatestGenerator``: ``last - zipfian.next_long(last)`` over the insert
    sequence's highest acknowledged key ``last``.
    """

    def __init__(self, basis: CounterGenerator, rng: random.Random | None = None) -> None:
        self.basis = basis
        self.zipfian = ZipfianGenerator(0, max(basis.last, 1) - 1, ZIPFIAN_CONSTANT, rng=rng)

    def next(self) -> int:
        mx = self.basis.last
        return mx - self.zipfian.next_long(mx)


class UniformGenerator:
    """Uniform integers in ``[lo, hi]`` (YCSB ``UniformLongGenerator``)."""

    def __init__(self, lo: int, hi: int, rng: random.Random | None = None) -> None:
        self.lo, self.hi = lo, hi
        self.rng = rng or random.Random()

    def next(self) -> int:
        return self.rng.randint(self.lo, self.hi)


@dataclass(frozen=True)
class Workload:
    """One YCSB core workload: operation proportions and request distribution.

    Proportions are of ``read``, ``update``, ``insert``, ``scan`` and ``rmw``
    (read-modify-write); they sum to 1. ``distribution`` is ``"zipfian"`` or ``"latest"``.
    ``max_scan_length``: scans are uniform in ``[1, max_scan_length]`` records.
    """

    name: str
    description: str
    read: float = 0.0
    update: float = 0.0
    insert: float = 0.0
    scan: float = 0.0
    rmw: float = 0.0
    distribution: str = "zipfian"
    max_scan_length: int = 100


#: The six core workloads, as in YCSB's ``workloads/workload[a-f]`` files.
WORKLOADS: dict[str, Workload] = {
    "A": Workload("A", "update heavy: 50% read, 50% update", read=0.5, update=0.5),
    "B": Workload("B", "read mostly: 95% read, 5% update", read=0.95, update=0.05),
    "C": Workload("C", "read only: 100% read", read=1.0),
    "D": Workload("D", "read latest: 95% read, 5% insert, latest distribution",
                  read=0.95, insert=0.05, distribution="latest"),
    "E": Workload("E", "short ranges: 95% scan (1-100 records), 5% insert",
                  scan=0.95, insert=0.05),
    "F": Workload("F", "read-modify-write: 50% read, 50% read-modify-write",
                  read=0.5, rmw=0.5),
}

#: Record shape of the core workloads: ``fieldcount`` fields of ``fieldlength`` bytes.
FIELD_COUNT = 10
FIELD_LENGTH = 100


class OperationChooser:
    """Draws the next operation name by the workload's proportions (YCSB
    ``DiscreteGenerator``)."""

    def __init__(self, w: Workload, rng: random.Random) -> None:
        self.rng = rng
        self.ops = [(name, p) for name, p in (("read", w.read), ("update", w.update),
                                              ("insert", w.insert), ("scan", w.scan),
                                              ("rmw", w.rmw)) if p > 0]
        self.total = sum(p for _, p in self.ops)

    def next(self) -> str:
        x = self.rng.random() * self.total
        for name, p in self.ops:
            if x < p:
                return name
            x -= p
        return self.ops[-1][0]


class KeyChooser:
    """Key numbers for one workload run over ``record_count`` loaded records, as YCSB's
    ``CoreWorkload``: the zipfian chooser spans the loaded records plus the expected inserts
    (``2 * operations * insert_proportion``) and redraws keys not inserted yet; inserts take
    the next key of the insert sequence."""

    def __init__(self, w: Workload, record_count: int, operation_count: int,
                 rng: random.Random) -> None:
        self.inserts = CounterGenerator(record_count)
        self.inserts.last = record_count - 1
        self.rng = rng
        self.w = w
        if w.distribution == "latest":
            self.chooser: ScrambledZipfianGenerator | SkewedLatestGenerator = (
                SkewedLatestGenerator(self.inserts, rng))
        else:
            expected_new = int(operation_count * w.insert * 2.0)
            self.chooser = ScrambledZipfianGenerator(0, record_count + expected_new - 1, rng)
        self.scan_len = UniformGenerator(1, w.max_scan_length, rng)

    def next_key(self) -> int:
        """A key number of an existing record (0-based)."""
        while True:
            k = self.chooser.next()
            if k <= self.inserts.last:
                return k

    def next_insert(self) -> int:
        return self.inserts.next()

    def acknowledge_insert(self, k: int) -> None:
        self.inserts.acknowledge(k)

    def next_scan_length(self) -> int:
        return self.scan_len.next()


def field_value(rng: random.Random, length: int = FIELD_LENGTH) -> str:
    """A random printable ASCII value of ``length`` bytes (YCSB ``RandomByteIterator``)."""
    return "".join(map(chr, rng.choices(range(32, 127), k=length)))
