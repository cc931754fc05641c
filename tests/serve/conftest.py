"""A real ``alexfeat serve`` app on a free loopback port (uvicorn in a thread), over a small real index: photos in
three class folders (one named like an HTML tag), embedded with random weights."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from extractor.cli import main
from tests.imagefiles import make_photo

pytest.importorskip("fastapi", reason="alexfeat serve needs the serve extra: pip install -e '.[serve]'")
import uvicorn

from index.serve import ServeConfig, create_app
from index.serve.server import bind, url_of

XSS_LABEL = "<img src=x onerror=window.__xss=1>"
CLASSES = ("cat", "dog", XSS_LABEL)
PER_CLASS = 6
MAX_PIXELS = 100_000  # the photos are 96x72; a 400x300 upload is over it
MAX_UPLOAD_MB = 0.5


@dataclass
class Served:
    url: str
    images: Path
    index_dir: Path
    app: object

    @property
    def service(self):  # the SearchService the lifespan loaded
        return self.app.state.service


def run_cli(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture(scope="session")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(images, index directory): 18 photos embedded with random weights, exact index of the raw embeddings."""
    base = tmp_path_factory.mktemp("serve")
    images = base / "images"
    for c, cls in enumerate(CLASSES):
        for i in range(PER_CLASS):
            make_photo(images / cls / f"p{i}.jpg", size=(96, 72), seed=10 * c + i)
    code, output = run_cli("embed", images, "-o", base / "emb", "--weights", "random", "--no-progress")
    assert code == 0, output
    # --augment 0: stored vectors are the embeddings, so an indexed file queried with expand=0 scores 1.0
    code, output = run_cli("index", "build", base / "emb", "-o", base / "idx", "--augment", "0", "--no-progress")
    assert code == 0, output
    return images, base / "idx"


@pytest.fixture(scope="session")
def served(index_dir: tuple[Path, Path]) -> Iterator[Served]:
    """The app from a ServeConfig (index and model loaded by the lifespan) served by uvicorn on 127.0.0.1:<free>."""
    images, idx = index_dir
    app = create_app(ServeConfig(idx, max_upload_mb=MAX_UPLOAD_MB, max_pixels=MAX_PIXELS))
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield Served(url_of(sock).rstrip("/"), images, idx, app)
    server.should_exit = True
    thread.join(30)
    sock.close()
