"""Index writes killed (SIGKILL) after each file they write: the previous index still answers, the rerun succeeds.

The writer is a real ``alexfeat index build/add/remove`` process; ``ALEXFEAT_INDEX_CRASH_AFTER`` makes it kill
itself right after writing the named file (the one test hook of ``index.indexdir``).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from index.build import build_index_dir
from index.indexdir import CRASH_ENV
from index.search import Searcher
from index.update import add_to_index, remove_from_index
from tests.index_data import clustered, paths_for, write_dataset

REPO = Path(__file__).resolve().parents[2]
N_OLD, N_NEW = 300, 60


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The old dataset and a grown one (the old rows and N_NEW more)."""
    root = tmp_path_factory.mktemp("emb")
    vectors = clustered(N_OLD + N_NEW)
    old, grown = root / "old", root / "grown"
    write_dataset(old, paths_for(N_OLD), vectors[:N_OLD])
    write_dataset(grown, paths_for(N_OLD), vectors[:N_OLD])
    write_dataset(grown, paths_for(N_NEW, start=N_OLD), vectors[N_OLD:])
    return old, grown


def _cli(*args: object, crash_after: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if crash_after is not None:
        env[CRASH_ENV] = crash_after
    command = [sys.executable, "-m", "extractor.cli", *map(str, args)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def _answers(index_dir: Path) -> tuple[int, list[list[int]]]:
    searcher = Searcher(index_dir)
    queries = clustered(5, seed=7)
    return searcher.count, [[hit.id for hit in hits] for hits in searcher.search_vectors(queries, 5)]


def _generations(index_dir: Path) -> list[str]:
    return sorted(p.name for p in index_dir.iterdir() if p.name.startswith("gen-"))


CASES = [
    ("build", "index.faiss"),
    ("build", "ids.parquet"),
    ("build", "index.json"),
    ("add", "index.faiss"),
    ("add", "ids.parquet"),
    ("add", "index.json"),
    ("remove", "index.faiss"),
    ("remove", "masked_ids.npy"),
    ("remove", "index.json"),
]


@pytest.mark.parametrize("command, crash_after", CASES)
def test_a_killed_writer_leaves_the_previous_index_answering(
    datasets: tuple[Path, Path], tmp_path: Path, command: str, crash_after: str
) -> None:
    old, grown = datasets
    index_dir = tmp_path / "idx"
    factory = "HNSW32" if command == "remove" else "Flat"  # HNSW masks removed ids: masked_ids.npy is written
    build_index_dir(old, index_dir, factory=factory)
    before = _answers(index_dir)
    victims = [int(i) for i in before[1][0][:3]]
    if command == "build":
        args: list[object] = ["index", "build", grown, "-o", index_dir, "--factory", factory]
        expected = N_OLD + N_NEW
    elif command == "add":
        args, expected = ["index", "add", index_dir, grown], N_OLD + N_NEW
    else:
        args = ["index", "remove", index_dir] + [a for v in victims for a in ("--id", v)]
        expected = N_OLD - len(victims)

    killed = _cli(*args, crash_after=crash_after)
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    if crash_after == "index.json":  # killed just after the switch: the new index answers, whole
        assert Searcher(index_dir).count == expected
    else:  # killed before it: the old index answers exactly as before, beside the dead writer's generation
        assert _answers(index_dir) == before
        assert len(_generations(index_dir)) == 2

    rerun = _cli(*args)
    if command == "remove" and crash_after == "index.json":  # done before the kill: nothing left to remove
        assert rerun.returncode == 1 and rerun.stderr.startswith("Error: ") and "not in the index" in rerun.stderr
    else:
        assert rerun.returncode == 0 and "Traceback" not in rerun.stderr, rerun.stderr
    count, results = _answers(index_dir)
    assert count == expected
    if command == "remove":
        assert not np.isin(victims, results).any()
    generation = json.loads((index_dir / "index.json").read_text())["generation"]
    assert _generations(index_dir) == [generation]  # the killed writer's leftovers are gone
    assert (index_dir / "index.faiss").resolve() == (index_dir / generation / "index.faiss").resolve()
    assert not [p.name for p in index_dir.iterdir() if p.name.endswith(".tmp")]


def test_a_single_generation_directory_still_loads_and_is_moved_to_a_generation_by_its_next_write(
    datasets: tuple[Path, Path], tmp_path: Path
) -> None:
    """An index directory written before generations existed (files beside index.json, format 1)."""
    old, grown = datasets
    index_dir = tmp_path / "idx"
    build_index_dir(old, index_dir, factory="Flat")
    info = json.loads((index_dir / "index.json").read_text())
    generation = info.pop("generation")
    info["format_version"] = 1
    for name in ("index.faiss", "ids.parquet"):
        (index_dir / name).unlink()
        (index_dir / generation / name).rename(index_dir / name)
    (index_dir / generation).rmdir()
    (index_dir / "index.json").write_text(json.dumps(info))
    before = _answers(index_dir)
    assert before[0] == N_OLD

    add_to_index(index_dir, grown)
    after = json.loads((index_dir / "index.json").read_text())
    assert after["generation"] == "gen-000001" and _generations(index_dir) == ["gen-000001"]
    assert (index_dir / "index.faiss").is_symlink() and _answers(index_dir)[0] == N_OLD + N_NEW


def test_a_second_writer_is_refused_while_one_holds_the_lock(datasets: tuple[Path, Path], tmp_path: Path) -> None:
    from extractor.errors import AlexfeatError
    from index.indexdir import index_lock

    old, _ = datasets
    index_dir = tmp_path / "idx"
    build_index_dir(old, index_dir, factory="Flat")
    with index_lock(index_dir):
        with pytest.raises(AlexfeatError, match="being written by another alexfeat job"):
            remove_from_index(index_dir, ids=[1])


def test_a_full_disk_during_an_add_leaves_the_previous_index_and_no_leftovers(
    datasets: tuple[Path, Path], tmp_path: Path
) -> None:
    """A real write failure: the writer may not write files over 20 kB (RLIMIT_FSIZE), as on a full disk."""
    old, grown = datasets
    index_dir = tmp_path / "idx"
    build_index_dir(old, index_dir, factory="Flat")
    before = _answers(index_dir)

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails with EFBIG instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-m", "extractor.cli", "index", "add", str(index_dir), str(grown)]
    failed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, preexec_fn=small_files)
    assert failed.returncode == 1 and failed.stderr.startswith("Error: cannot write the index"), failed.stderr
    assert "Traceback" not in failed.stderr
    assert _answers(index_dir) == before
    assert len(_generations(index_dir)) == 1  # the half-written generation was removed at once
