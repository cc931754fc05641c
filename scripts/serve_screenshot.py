"""Take the README's screenshot of the ``alexfeat serve`` page: serve an index on loopback, search by a photo in
Debian's chromium (Playwright, no download), save a 256-colour PNG.

    python scripts/serve_screenshot.py INDEX_DIR QUERY_IMAGE [-o docs/serve.png] [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import uvicorn
from PIL import Image
from playwright.sync_api import expect, sync_playwright

from index.serve import ServeConfig, create_app
from index.serve.server import bind, url_of

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("index_dir", type=Path)
    parser.add_argument("query", type=Path)
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/serve.png"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("-k", type=int, default=20)
    args = parser.parse_args()

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(ServeConfig(args.index_dir)), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(url_of(sock))
            expect(page.locator("#info")).to_contain_text("images")
            page.select_option("#k", str(args.k))
            page.set_input_files("#file", str(args.query))
            expect(page.locator("#results .result")).to_have_count(args.k)
            page.wait_for_function("[...document.querySelectorAll('#results img')].every(i => i.complete)")
            args.output.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.output))
            browser.close()
    finally:
        server.should_exit = True
        thread.join(30)
    with Image.open(args.output) as shot:  # 256 colours: a third of the size, no visible loss at this scale
        small = shot.convert("RGB").quantize(256, Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG)
    small.save(args.output, optimize=True)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
