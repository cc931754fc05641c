"""The web page in a real browser: Debian's chromium driven by Playwright (never ``playwright install``)."""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Iterator

import pytest

from index.search import Searcher
from tests.serve.conftest import CLASSES, PER_CLASS, XSS_LABEL, Served

CHROMIUM = os.environ.get("ALEXFEAT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright (the dev extra)")
if not os.path.exists(CHROMIUM):
    pytest.skip(
        f"no chromium at {CHROMIUM}: apt-get install -y chromium (or set ALEXFEAT_CHROMIUM)", allow_module_level=True
    )


@pytest.fixture(scope="module")
def page(served: Served) -> Iterator[object]:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(served.url + "/")
        yield page
        browser.close()
        assert not errors, errors


def test_upload_then_click_a_result_searches_from_it(served: Served, page) -> None:
    expect = sync_api.expect
    expect(page.locator("#info")).to_contain_text(f"{len(CLASSES) * PER_CLASS} images")
    page.set_input_files("#file", str(served.images / "dog" / "p2.jpg"))
    cards = page.locator("#results .result")
    expect(cards).to_have_count(20 if len(CLASSES) * PER_CLASS >= 20 else len(CLASSES) * PER_CLASS)
    expect(page.locator("#status")).to_contain_text("results for p2.jpg")
    top = served.service.search_image((served.images / "dog" / "p2.jpg").read_bytes(), k=20).hits[0]  # the API's
    first = cards.nth(0)
    expect(first.locator(".path")).to_have_text(top.path)
    expect(first.locator(".label")).to_have_text(top.label or "")
    expect(first.locator(".score")).to_have_text(f"{top.score:.3f}")
    # every thumbnail loaded (64-bit ids survive the page's JSON parsing)
    page.wait_for_function("[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth)")

    target = cards.nth(3)
    target_id, target_path = target.get_attribute("data-id"), target.locator(".path").inner_text()
    assert target_id == str(Searcher(served.index_dir).dir.lookup.path_to_id()[target_path])
    target.click()
    expect(page.locator("#status")).to_contain_text(f"results for {target_path}")
    expect(cards.nth(0)).to_have_attribute("data-id", target_id)  # the item itself comes first
    own = served.service.search_id(int(target_id), 20).hits[0]
    expect(cards.nth(0).locator(".score")).to_have_text(f"{own.score:.3f}")
    expect(page.locator("#query-name")).to_have_text(target_path)


DROP = """([name, b64]) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const data = new DataTransfer();
    data.items.add(new File([bytes], name, { type: "image/jpeg" }));
    document.getElementById("drop").dispatchEvent(new DragEvent("drop", { dataTransfer: data, bubbles: true }));
}"""


def test_dropping_a_photo_searches_it(served: Served, page) -> None:
    data = base64.b64encode((served.images / "cat" / "p4.jpg").read_bytes()).decode()
    page.evaluate(DROP, ["dropped.jpg", data])
    sync_api.expect(page.locator("#status")).to_contain_text("results for dropped.jpg")
    top = served.service.search_image((served.images / "cat" / "p4.jpg").read_bytes(), k=20).hits[0]
    sync_api.expect(page.locator("#results .result").nth(0).locator(".path")).to_have_text(top.path)
    sync_api.expect(page.locator("#query-name")).to_have_text("dropped.jpg")


def test_a_label_that_looks_like_html_is_shown_as_text(served: Served, page) -> None:
    expect = sync_api.expect
    page.set_input_files("#file", str(served.images / XSS_LABEL / "p0.jpg"))
    mine = page.locator("#results .result").filter(has_text=f"{XSS_LABEL}/p0.jpg")  # 20 of 18: every image shows
    expect(mine.locator(".label")).to_have_text(XSS_LABEL)
    expect(mine.locator(".path")).to_have_text(f"{XSS_LABEL}/p0.jpg")
    assert page.locator('img[src="x"]').count() == 0
    assert page.evaluate("window.__xss") is None


def test_a_bad_file_shows_the_servers_message(served: Served, page, tmp_path) -> None:
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a picture")
    page.set_input_files("#file", str(bad))
    sync_api.expect(page.locator("#error")).to_contain_text("notes.jpg: not an image")
    assert page.locator("#error").is_visible()
