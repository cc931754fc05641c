"""index.factory and index.build on arrays: auto's choice, the IVF list cap, memory budgets, tuning to a target."""

from __future__ import annotations

import logging

import faiss
import numpy as np
import pytest

from extractor.errors import AlexfeatError
from index.build import build_index
from index.factory import (
    MIN_POINTS_PER_LIST,
    check_factory,
    choose_factory,
    ivf_nlist,
    parse_memory_budget,
    training_size,
)
from index.tune import measure, recall_probe
from tests.index_data import clustered


@pytest.mark.parametrize(
    "text, expected",
    [
        ("4G", 4 << 30),
        ("512M", 512 << 20),
        ("1.5GB", int(1.5 * (1 << 30))),
        ("2GiB", 2 << 30),
        ("100k", 100 << 10),
        ("12345", 12345),
    ],
)
def test_memory_budget_sizes(text: str, expected: int) -> None:
    assert parse_memory_budget(text) == expected


@pytest.mark.parametrize("text", ["lots", "4X", "-1G", "0", ""])
def test_unreadable_memory_budget_is_a_clear_error(text: str) -> None:
    with pytest.raises(AlexfeatError, match="memory budget"):
        parse_memory_budget(text)


def test_auto_is_exact_up_to_the_threshold_then_an_inverted_file() -> None:
    assert choose_factory(100_000, 256).factory == "Flat"
    big = choose_factory(1_000_000, 256).factory
    assert big == "IVF4096,Flat"


@pytest.mark.parametrize("count", [1, 38, 39, 100, 5_000, 100_001, 3_000_000])
def test_ivf_lists_never_outnumber_what_the_training_sample_supports(count: int) -> None:
    nlist = ivf_nlist(count)
    assert 1 <= nlist <= max(1, count // MIN_POINTS_PER_LIST)
    factory = f"IVF{nlist},Flat"
    assert training_size(count, factory) >= min(count, MIN_POINTS_PER_LIST * nlist)
    check_factory(factory, count)  # no error


def test_memory_budget_picks_compressed_codes_and_refuses_the_impossible() -> None:
    n, dim = 1_000_000, 256
    assert choose_factory(n, dim, 8 << 30).factory == "IVF4096,Flat"  # 1 GiB of floats fits
    assert choose_factory(n, dim, 400 << 20).factory == "IVF4096,SQ8"  # 8-bit codes: 256 B/vector
    assert choose_factory(n, dim, 250 << 20).factory == "IVF4096,SQ6"
    assert choose_factory(n, dim, 180 << 20).factory == "IVF4096,SQ4"
    assert choose_factory(n, dim, 100 << 20).factory == "IVF4096,PQ64x4fs"
    with pytest.raises(AlexfeatError, match="too small"):
        choose_factory(n, dim, 10 << 20)


def test_a_factory_the_data_cannot_train_is_refused_before_faiss_fails() -> None:
    with pytest.raises(AlexfeatError, match=r"needs at least 64 vectors.*IVF1,"):
        check_factory("IVF64,Flat", 50)
    with pytest.raises(AlexfeatError, match="needs at least 256 vectors"):
        check_factory("PQ8", 200)


def test_empty_input_is_a_clear_error() -> None:
    with pytest.raises(AlexfeatError, match="empty"):
        choose_factory(0, 32)
    with pytest.raises(AlexfeatError, match="empty"):
        build_index(np.zeros((0, 32), np.float32), np.zeros(0, np.int64))


@pytest.mark.parametrize("n", [1, 2, 9, 50])
def test_auto_builds_on_tiny_collections(n: int) -> None:
    x = clustered(n)
    built = build_index(x, np.arange(n) * 3 + 1)
    assert built.index.ntotal == n
    assert built.recall_at_10 == 1.0
    _, found = built.index.search(x, 1)
    assert (found[:, 0] == np.arange(n) * 3 + 1).all()


def test_auto_above_the_exact_threshold_trains_an_ivf_without_faiss_warnings_and_reaches_the_target(
    capfd: pytest.CaptureFixture[str],
) -> None:
    x = clustered(3_000, clusters=30, noise=0.6)
    built = build_index(x, np.arange(3_000), target_recall=0.95, exact_max=1_000)
    assert built.factory.startswith("IVF") and built.removal == "native"
    assert "nprobe" in built.search_params
    assert built.recall_at_10 >= 0.95
    assert "WARNING" not in capfd.readouterr().err  # FAISS prints "please provide at least ..." there


def test_tuning_picks_the_smallest_nprobe_that_reaches_the_target() -> None:
    x = clustered(4_000, clusters=40, noise=0.8)
    built = build_index(x, np.arange(4_000), factory="IVF64,Flat", target_recall=0.9)
    nprobe = built.search_params["nprobe"]
    assert built.recall_at_10 >= 0.9
    assert nprobe >= 2  # these clusters straddle lists: one list is not enough
    probe = recall_probe(x, np.arange(4_000))
    assert measure(built.index, probe, {"nprobe": nprobe})[0] == pytest.approx(built.recall_at_10, abs=1e-4)
    assert measure(built.index, probe, {"nprobe": nprobe - 1})[0] < 0.9  # one list fewer misses the target


def test_unreachable_target_keeps_the_best_recall_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    x = clustered(2_000, noise=1.0)
    with caplog.at_level(logging.WARNING):
        built = build_index(x, np.arange(2_000), factory="IVF16,PQ4x4fs", target_recall=1.0)
    assert built.search_params["nprobe"] == 16  # every list: the most PQ can do
    assert built.recall_at_10 < 1.0
    assert "below the target" in caplog.text


def test_hnsw_is_wrapped_in_an_id_map_and_marked_for_masking() -> None:
    x = clustered(500)
    built = build_index(x, np.arange(500) + 10**12, factory="HNSW32")
    assert built.factory == "IDMap2,HNSW32" and built.removal == "mask"
    assert isinstance(faiss.downcast_index(built.index), faiss.IndexIDMap2)
    assert "efSearch" in built.search_params


def test_invalid_factory_string_is_a_clear_error() -> None:
    with pytest.raises(AlexfeatError, match="FAISS cannot build --factory 'Bogus12'"):
        build_index(clustered(100), np.arange(100), factory="Bogus12")


def test_duplicate_ids_are_refused() -> None:
    with pytest.raises(AlexfeatError, match="unique"):
        build_index(clustered(10), np.zeros(10, np.int64))


@pytest.mark.parametrize(
    "budget, factory, min_recall",
    [(200_000, "IDMap2,SQ8", 0.9), (150_000, "IDMap2,SQ6", 0.7), (130_000, "IDMap2,SQ4", 0.3)],
)
def test_a_tight_memory_budget_builds_a_compressed_index_that_still_answers(
    budget: int, factory: str, min_recall: float
) -> None:
    x = clustered(2_000)  # floats with ids would need 2000 * (128 + 48) = 352 kB
    built = build_index(x, np.arange(2_000), memory_budget=budget)
    assert built.factory == factory
    assert len(faiss.serialize_index(built.index)) < 2_000 * 32 * 4  # smaller than the float vectors
    assert built.recall_at_10 > min_recall
    _, found = built.index.search(x[:50], 1)
    assert (found[:, 0] == np.arange(50)).mean() > 0.75  # most vectors still find themselves first
