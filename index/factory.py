"""Choose and check FAISS factory strings: ``auto`` picks by vector count, dimension and memory budget.

``auto`` keeps exact search (``Flat``) up to ``EXACT_MAX`` vectors, where a brute-force scan is still fast,
and uses an inverted file above that. The codec is the most exact one whose memory fits the budget:

===================  =================  ====================================================================
codec                bytes per vector   recall@10 measured here (clustered 32-d / 256-d unit vectors)
===================  =================  ====================================================================
``Flat``             4 d                1.0: exact distances
``SQ8``              d                  0.94 / 0.95-0.98
``SQ6``              3/4 d              0.77 / 0.83-0.93
``SQ4``              1/2 d              0.38 / 0.48-0.74
``PQ{d/4}x4fs``      1/8 d              0.09-0.2 / 0.22-0.34: the last resort, with a warning
===================  =================  ====================================================================

Re-ranking PQ candidates does not help a memory budget: on full vectors (``RFlat``) it needs more memory than
``Flat`` itself, and on scalar-quantised codes (``Refine(SQ8)``/``Refine(SQ4)``) it measured below the same codes
used alone at the same size. An inverted file gets ``nlist`` ≈ 4·√N lists (a power of two), never more than the
training sample supports: every list gets at least ``MIN_POINTS_PER_LIST`` training points, so FAISS's
``nx >= k`` failure and its "please provide at least ..." warning cannot happen.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass

from extractor.errors import IndexDirError

log = logging.getLogger(__name__)

EXACT_MAX = 100_000  # up to here a flat (brute-force) scan answers fast enough
MIN_POINTS_PER_LIST = 39  # FAISS warns below 39 training points per centroid
TRAIN_POINTS_PER_LIST = 64  # training sample size per IVF list (k-means time grows with it)
MAX_TRAIN_POINTS = 1 << 18  # sample for codecs trained without k-means (scalar quantisers: value ranges)
LOSSY_RANK = 2  # codecs from the third on (SQ6, SQ4, PQ) lose much recall: warn
ID_OVERHEAD_BYTES = 48  # per vector: the id, and the id -> position map used to remove and reconstruct
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_IVF_RE = re.compile(r"(?:^|,)IVF(\d+)")
_PQ_RE = re.compile(r"(?:^|,)PQ(\d+)(?:x(\d+))?")


@dataclass(frozen=True)
class FactoryChoice:
    """A factory string (as given to ``faiss.index_factory``) and why it was chosen."""

    factory: str
    reason: str


def parse_memory_budget(text: str | int | None) -> int | None:
    """``"4G"``, ``"512M"``, ``"1.5GB"``, ``"2GiB"`` or a number of bytes → bytes; None stays None."""
    if text is None or isinstance(text, int):
        if isinstance(text, int) and text <= 0:
            raise IndexDirError(f"memory budget must be positive, got {text}")
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", text.upper())
    if not match:
        raise IndexDirError(f"cannot read memory budget {text!r}: write a size such as 512M, 4G or 1.5GB")
    value = int(float(match.group(1)) * _UNITS[match.group(2)])
    if value <= 0:
        raise IndexDirError(f"memory budget must be positive, got {text!r}")
    return value


def default_memory_budget() -> int | None:
    """Half the machine's physical memory (None where the platform cannot tell)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return None


def ivf_nlist(count: int) -> int:
    """Lists for an inverted file over ``count`` vectors: the power of two nearest 4·√N, capped so each list
    gets ``MIN_POINTS_PER_LIST`` training points (at least 1)."""
    wanted = 2 ** round(math.log2(max(4 * math.sqrt(max(count, 1)), 1)))
    return max(1, min(wanted, count // MIN_POINTS_PER_LIST))


def quantiser_centroids(factory: str) -> list[tuple[str, int]]:
    """(kind, centroids) of each trained quantiser in a factory string: ``IVF`` lists, ``PQ`` codebook size."""
    return [("IVF", int(m.group(1))) for m in _IVF_RE.finditer(factory)] + [
        ("PQ", 2 ** int(m.group(2) or 8)) for m in _PQ_RE.finditer(factory)
    ]


def training_size(count: int, factory: str) -> int:
    """How many vectors to train ``factory`` on: ``TRAIN_POINTS_PER_LIST`` per centroid of its largest quantiser
    (k-means time grows with it), all of them when fewer; 0 when nothing needs training beyond a quick pass."""
    centroids = max((k for _, k in quantiser_centroids(factory)), default=0)
    return min(count, TRAIN_POINTS_PER_LIST * centroids) if centroids else min(count, MAX_TRAIN_POINTS)


def _pq_subquantizers(dim: int, target: int) -> int:
    """The largest even divisor of ``dim`` not above ``target`` (fast-scan PQ needs an even count)."""
    for m in range(max(2, min(target, dim)), 1, -1):
        if dim % m == 0 and m % 2 == 0:
            return m
    return 0


def _codecs(dim: int) -> list[tuple[str, float]]:
    """(codec, bytes per vector) from most to least exact."""
    codecs = [("Flat", 4.0 * dim), ("SQ8", float(dim)), ("SQ6", 0.75 * dim), ("SQ4", 0.5 * dim)]
    m = _pq_subquantizers(dim, dim // 4)
    if m:
        codecs.append((f"PQ{m}x4fs", m / 2))
    return codecs


def estimate_bytes(count: int, dim: int, codec_bytes: float, nlist: int = 0) -> int:
    """Memory of an index: codes and ids per vector, plus the IVF's centroids."""
    return int(count * (codec_bytes + ID_OVERHEAD_BYTES) + nlist * dim * 4)


def choose_factory(count: int, dim: int, memory_budget: int | None = None, exact_max: int = EXACT_MAX) -> FactoryChoice:
    """The factory string ``auto`` uses for ``count`` vectors of ``dim`` within ``memory_budget`` bytes."""
    if count <= 0:
        raise IndexDirError("cannot index an empty dataset: it holds no vectors")
    nlist = 0 if count <= exact_max else ivf_nlist(count)
    prefix = f"IVF{nlist}," if nlist else ""
    where = f"{count:,} vectors" + (
        f" > {exact_max:,}: inverted file with {nlist} lists" if nlist else f" <= {exact_max:,}: exact scan"
    )
    codecs = _codecs(dim)
    for rank, (codec, per_vector) in enumerate(codecs):
        need = estimate_bytes(count, dim, per_vector, nlist)
        if memory_budget is None or need <= memory_budget:
            factory = "Flat" if codec == "Flat" and not nlist else prefix + codec
            budget = "" if memory_budget is None else f", {_size(need)} within the {_size(memory_budget)} budget"
            if rank >= LOSSY_RANK:
                log.warning(
                    "memory budget %s forces %s: expect recall@10 well below the target (8-bit codes would need %s)",
                    _size(memory_budget),
                    factory,
                    _size(estimate_bytes(count, dim, dim, nlist)),
                )
            return FactoryChoice(factory, where + budget)
    smallest = estimate_bytes(count, dim, codecs[-1][1], nlist)
    raise IndexDirError(
        f"a memory budget of {_size(memory_budget)} is too small for {count:,} vectors of {dim} "
        f"dimensions: the smallest index alexfeat builds needs about {_size(smallest)}; raise "
        "--memory-budget or pass a --factory string"
    )


def check_factory(factory: str, count: int) -> None:
    """Refuse a factory string whose quantisers cannot be trained on ``count`` vectors, before FAISS fails.

    Warns when training gets fewer than ``MIN_POINTS_PER_LIST`` points per centroid.
    """
    if count <= 0:
        raise IndexDirError("cannot index an empty dataset: it holds no vectors")
    advice = {
        "IVF": f"--factory IVF{max(1, count // MIN_POINTS_PER_LIST)},... or --factory auto",
        "PQ": "fewer bits per code (PQ<M>x4fs) or --factory auto",
    }
    for kind, centroids in quantiser_centroids(factory):
        if centroids > count:
            raise IndexDirError(
                f"--factory {factory!r} needs at least {centroids:,} vectors to train its {kind} "
                f"quantiser ({centroids:,} centroids) but the dataset has {count:,}; "
                f"use {advice[kind]}"
            )
        if centroids * MIN_POINTS_PER_LIST > count:
            log.warning(
                "%s: %d centroids trained on %d vectors (< %d per centroid) may cluster poorly",
                factory,
                centroids,
                count,
                MIN_POINTS_PER_LIST,
            )


def _size(n: int | None) -> str:
    if n is None:
        return "unlimited"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
