"""The JSON API of ``alexfeat serve`` through a real HTTP client against a real uvicorn on loopback."""

from __future__ import annotations

import concurrent.futures
import io
import threading
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from index.search import Searcher
from tests.imagefiles import make_photo
from tests.serve.conftest import CLASSES, MAX_UPLOAD_MB, PER_CLASS, XSS_LABEL, Served


@pytest.fixture(scope="module")
def client(served: Served) -> httpx.Client:
    with httpx.Client(base_url=served.url, timeout=60) as c:
        yield c


def first_id(served: Served, path: str = "cat/p0.jpg") -> int:
    return Searcher(served.index_dir).dir.lookup.path_to_id()[path]


def upload(
    client: httpx.Client, data: bytes, name: str = "q.jpg", k: int | None = None, expand: int | None = None
) -> httpx.Response:
    """POST an image; ``expand=0`` asks for raw nearest neighbours (an indexed copy then scores 1.0 and comes first)."""
    form = {key: str(v) for key, v in (("k", k), ("expand", expand)) if v is not None} or None
    return client.post("/api/search", files={"image": (name, data, "image/jpeg")}, data=form)


def assert_error(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and "Traceback" not in body["error"]
    for word in words:
        assert word in body["error"], body["error"]


def test_health_and_info(client: httpx.Client) -> None:
    assert client.get("/api/health").json() == {"status": "ok"}
    info = client.get("/api/info").json()
    assert info["count"] == len(CLASSES) * PER_CLASS and info["dim"] == 256
    assert info["factory"] == "IDMap2,Flat" and info["search_params"] == {} and info["recall_at_10"] == 1.0
    assert info["model"]["weights_source"] == "random" and info["model"]["layer"] == "pool5"
    assert info["max_upload_mb"] == MAX_UPLOAD_MB


def test_search_by_id_and_path_return_what_search_json_returns(served: Served, client: httpx.Client) -> None:
    item = first_id(served)
    by_id = client.get("/api/search", params={"id": item, "k": 5}).json()
    by_path = client.get("/api/search", params={"path": "cat/p0.jpg", "k": 5}).json()
    assert by_id["took_ms"] >= 0 and by_path["took_ms"] >= 0
    expected = Searcher(served.index_dir).search_ids([item], 5)[0].as_dict()  # what `search --json` prints
    assert {key: by_id[key] for key in expected} == expected
    assert {key: by_path[key] for key in expected} == expected
    assert [r["rank"] for r in by_id["results"]] == [1, 2, 3, 4, 5]
    assert by_id["results"][0]["id"] == item  # the item itself first, also with query expansion (the default)
    raw = client.get("/api/search", params={"id": item, "k": 5, "expand": 0}).json()
    assert raw["results"][0] == {"rank": 1, "id": item, "path": "cat/p0.jpg", "label": "cat", "score": 1.0}
    assert raw["results"] == Searcher(served.index_dir).search_ids([item], 5, expand=0)[0].as_dict()["results"]
    assert len(client.get("/api/search", params={"id": item}).json()["results"]) == 10  # k defaults to 10


def test_search_by_image_finds_the_indexed_copy_first(served: Served, client: httpx.Client) -> None:
    data = (served.images / "dog" / "p3.jpg").read_bytes()
    body = upload(client, data, "dog3.jpg", k=4, expand=0).json()
    assert body["query"] == {"image": "dog3.jpg"} and len(body["results"]) == 4
    top = body["results"][0]
    assert (top["path"], top["label"], top["id"]) == ("dog/p3.jpg", "dog", first_id(served, "dog/p3.jpg"))
    assert top["score"] == pytest.approx(1.0, abs=1e-4)
    default = upload(client, data).json()["results"]  # k 10, expanded as `search --image` does by default
    expected = Searcher(served.index_dir).search_images([served.images / "dog" / "p3.jpg"], 10).results[0]
    assert [(h["id"], h["score"]) for h in default] == [(h.id, pytest.approx(h.score, abs=1e-5)) for h in expected.hits]


def test_the_service_answers_from_python_as_over_http(served: Served, client: httpx.Client) -> None:
    data = (served.images / "cat" / "p5.jpg").read_bytes()
    result = served.service.search_image(data, k=3, name="p5.jpg")
    body = upload(client, data, "p5.jpg", k=3).json()
    assert served.service.search_image(data, k=1, expand=0).hits[0].path == "cat/p5.jpg"
    assert result.as_dict() == {key: body[key] for key in ("query", "results")}
    assert served.service.search_path("cat/p5.jpg", 3).hits[0].path == "cat/p5.jpg"


def test_thumbnail_is_a_jpeg_of_an_indexed_image(served: Served, client: httpx.Client) -> None:
    response = client.get(f"/api/thumbnail/{first_id(served)}", params={"size": 48})
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(response.content)) as image:
        assert image.format == "JPEG" and max(image.size) == 48
    assert_error(client.get("/api/thumbnail/12345"), 404, "id 12345 is not in the index")
    assert_error(client.get(f"/api/thumbnail/{-(2**70)}"), 404, "is not in the index")
    assert_error(client.get(f"/api/thumbnail/{first_id(served)}", params={"size": 5000}), 422, "size")
    assert_error(client.get("/api/thumbnail/abc"), 422, "item_id")
    assert_error(client.get("/api/thumbnail/..%2F..%2Fetc%2Fpasswd"), 404, "Not Found")  # no path is ever opened


def chunked_multipart(data: bytes, boundary: str = "alexfeat-test-boundary") -> tuple[dict[str, str], object]:
    """Headers and a generator body: httpx sends it with Transfer-Encoding: chunked (no Content-Length)."""
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="big.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()

    def body():
        yield head
        for start in range(0, len(data), 64 * 1024):
            yield data[start : start + 64 * 1024]
        yield f"\r\n--{boundary}--\r\n".encode()

    return {"content-type": f"multipart/form-data; boundary={boundary}"}, body()


@pytest.mark.parametrize(
    "case, status, words",
    [
        ("not an image", 400, ["notes.jpg", "not an image"]),
        ("truncated", 400, ["truncated"]),
        ("empty", 400, ["empty"]),
        ("too many pixels", 400, ["120,000 pixels", "100,000"]),
        ("upload too large", 413, ["over the limit of 0.5 MB"]),
        ("upload too large, chunked", 413, ["over the limit of 0.5 MB"]),
        ("no image field", 422, ["image"]),
        ("k over the maximum", 422, ["k", "1000"]),
    ],
)
def test_bad_uploads_get_a_4xx_and_the_service_keeps_serving(
    served: Served, client: httpx.Client, tmp_path: Path, case: str, status: int, words: list[str]
) -> None:
    photo = (served.images / "cat" / "p1.jpg").read_bytes()
    big = photo + bytes(700_000)  # a JPEG with trailing padding: over 0.5 MB with the multipart slack (64 KiB)
    if case == "not an image":
        response = upload(client, b"just some notes\n" * 10, "notes.jpg")
    elif case == "truncated":
        response = upload(client, photo[: len(photo) // 2])
    elif case == "empty":
        response = upload(client, b"")
    elif case == "too many pixels":
        response = upload(client, make_photo(tmp_path / "wide.jpg", size=(400, 300)).read_bytes())
    elif case == "upload too large":
        response = upload(client, big, "big.png")
    elif case == "upload too large, chunked":
        headers, body = chunked_multipart(big)
        response = client.post("/api/search", headers=headers, content=body)
    elif case == "no image field":
        response = client.post("/api/search", data={"k": "3"})
    else:
        response = upload(client, photo, k=1001)
    assert_error(response, status, *words)
    assert client.get("/api/health").status_code == 200
    assert upload(client, photo, k=2, expand=0).json()["results"][0]["path"] == "cat/p1.jpg"


@pytest.mark.parametrize(
    "params, status, words",
    [
        ({"id": 12345}, 404, ["id 12345 is not in the index"]),
        ({"id": 2**64}, 404, [f"id {2**64} is not in the index"]),
        ({"path": "cat/none.jpg"}, 404, ["'cat/none.jpg' is not in the index"]),
        ({"path": "../../etc/passwd"}, 404, ["not in the index"]),
        ({"id": "abc"}, 422, ["id", "integer"]),
        ({"path": "cat/p0.jpg", "k": 0}, 422, ["k", "greater than or equal to 1"]),
        ({"path": "cat/p0.jpg", "k": 1001}, 422, ["k", "less than or equal to 1000"]),
        ({"path": "cat/p0.jpg", "expand": -1}, 422, ["expand", "greater than or equal to 0"]),
        ({}, 400, ["give one of the query parameters id or path"]),
        ({"id": 1, "path": "cat/p0.jpg"}, 400, ["give one of"]),
    ],
)
def test_bad_queries_get_a_4xx(client: httpx.Client, params: dict, status: int, words: list[str]) -> None:
    assert_error(client.get("/api/search", params=params), status, *words)


def test_unknown_route_and_docs(client: httpx.Client) -> None:
    assert_error(client.get("/api/nothing"), 404, "Not Found")
    assert client.get("/docs").status_code == 200
    assert {"/api/search", "/api/info", "/api/health", "/api/thumbnail/{item_id}"} <= set(
        client.get("/openapi.json").json()["paths"]
    )


def test_concurrent_image_queries_share_forward_passes(served: Served, client: httpx.Client) -> None:
    files = sorted(served.images.rglob("*.jpg"))[:12]
    before = sum(served.service.batcher.batch_sizes().values())
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        bodies = list(pool.map(lambda f: upload(client, f.read_bytes(), f.name, k=1, expand=0).json(), files))
    for f, body in zip(files, bodies):
        assert body["results"][0]["path"] == f.relative_to(served.images).as_posix()
    sizes = served.service.batcher.batch_sizes()
    assert sum(sizes.values()) - before < len(files)  # fewer forward passes than queries
    assert max(sizes) > 1


def test_queries_by_id_do_not_wait_behind_image_inference(served: Served, client: httpx.Client) -> None:
    """With the inference thread held, an id query is answered; the image query is answered once it is let go."""
    batcher = served.service.batcher
    gate, entered = threading.Event(), threading.Event()
    real_fn = batcher.fn

    def held(items):
        entered.set()
        gate.wait(30)
        return real_fn(items)

    batcher.fn = held
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            photo = (served.images / "dog" / "p0.jpg").read_bytes()
            pending = pool.submit(upload, client, photo, "dog0.jpg", 1, 0)
            assert entered.wait(30)
            start = time.perf_counter()
            by_id = client.get("/api/search", params={"path": "cat/p2.jpg", "k": 3})
            assert by_id.status_code == 200 and time.perf_counter() - start < 5
            assert not pending.done()
            gate.set()
            assert pending.result(30).json()["results"][0]["path"] == "dog/p0.jpg"
    finally:
        batcher.fn = real_fn
        gate.set()


def test_labels_and_paths_are_returned_as_they_are(served: Served, client: httpx.Client) -> None:
    body = client.get("/api/search", params={"path": f"{XSS_LABEL}/p0.jpg", "k": 1}).json()
    assert body["results"][0]["label"] == XSS_LABEL
