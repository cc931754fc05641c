"""The results pages: one self-contained HTML file, each search query beside its neighbours with their scores, or
each group of near-duplicates with each member's score to the group's first.

Thumbnails are inline base64 JPEGs, so the page can be mailed or archived; an image that cannot be read shows
as a labelled placeholder instead of breaking the page.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from extractor.errors import AlexfeatError
from extractor.util.atomic import write_text_atomic
from index.dedup import Member
from index.search import Hit, QueryResult

log = logging.getLogger(__name__)

THUMB_SIZE = 160

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; } p.meta { color: #666; font-size: .9em; }
section { margin: 1.2em 0 2em; } h2 { font-size: 1em; margin: .3em 0; word-break: break-all; }
.row { display: flex; gap: 10px; overflow-x: auto; align-items: flex-start; }
figure { margin: 0; width: 170px; flex: none; font-size: .78em; }
figure.query { border-right: 3px solid #36c; padding-right: 10px; }
img, .missing { width: 160px; height: 160px; object-fit: contain; background: #f3f3f3; display: block; }
.missing { display: flex; align-items: center; justify-content: center; color: #999; }
figcaption { margin-top: 3px; word-break: break-all; } .score { font-weight: bold; }
"""


def thumbnail_jpeg(path: Path, size: int = THUMB_SIZE) -> bytes | None:
    """A JPEG thumbnail of an image file (EXIF-oriented, at most ``size`` pixels a side), None if it cannot be read."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:
            image.draft("RGB", (size * 2, size * 2))
            thumb = ImageOps.exif_transpose(image).convert("RGB")
            thumb.thumbnail((size, size))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        log.warning("no thumbnail for %s: %s", path, exc)
        return None
    buffer = io.BytesIO()
    thumb.save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


def thumbnail_uri(path: Path, size: int = THUMB_SIZE) -> str | None:
    """A ``data:image/jpeg;base64,...`` thumbnail of an image file, None if it cannot be read."""
    jpeg = thumbnail_jpeg(path, size)
    return None if jpeg is None else "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def _figure(image: Path | None, caption: str, css: str = "") -> str:
    uri = thumbnail_uri(image) if image is not None else None
    picture = f'<img src="{uri}" alt="">' if uri else '<div class="missing">image not found</div>'
    return f'<figure class="{css}">{picture}<figcaption>{caption}</figcaption></figure>'


def _hit_caption(hit: Hit) -> str:
    label = f"<br>{html.escape(hit.label)}" if hit.label is not None else ""
    return f'#{hit.rank} <span class="score">{hit.score:.3f}</span>{label}<br>{html.escape(hit.path)}<br>id {hit.id}'


def _query_title(result: QueryResult) -> str:
    if "image" in result.query:
        return f"image {result.query['image']}"
    return f"id {result.query['id']} · {result.query['path']}"


def render_page(results: Sequence[QueryResult], images_root: Path, title: str = "alexfeat search") -> str:
    """The HTML page for ``results``; indexed images are found under ``images_root``."""
    sections = []
    for result in results:
        query_image = result.image_file or (images_root / result.query["path"] if "path" in result.query else None)
        figures = [_figure(query_image, "query", "query")]
        figures += [_figure(images_root / hit.path, _hit_caption(hit)) for hit in result.hits]
        sections.append(
            f'<section><h2>{html.escape(_query_title(result))}</h2><div class="row">{"".join(figures)}</div></section>'
        )
    meta = f"queries: {len(results)}; score = cosine similarity; images from {html.escape(str(images_root))}"
    return _document(title, meta, sections)


def _document(title: str, meta: str, sections: list[str]) -> str:
    """The page around ``sections``; ``title`` is escaped here, ``meta`` and ``sections`` must be HTML already."""
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f'<p class="meta">{meta}</p>{"".join(sections)}</body></html>\n'
    )


def render_groups_page(groups: Sequence[Sequence[Member]], images_root: Path, title: str = "alexfeat dedup") -> str:
    """The HTML page of near-duplicate groups: each group's first member, then the others with their scores."""
    sections = []
    for number, group in enumerate(groups, 1):
        figures = [_figure(images_root / group[0].path, f"first<br>{html.escape(group[0].path)}", "query")]
        figures += [
            _figure(images_root / m.path, f'<span class="score">{m.score:.3f}</span><br>{html.escape(m.path)}')
            for m in group[1:]
        ]
        sections.append(
            f'<section><h2>group {number}: {len(group)} images</h2><div class="row">{"".join(figures)}</div></section>'
        )
    meta = (
        f"groups: {len(groups)}; score = similarity to the group's first; images from {html.escape(str(images_root))}"
    )
    return _document(title, meta, sections)


def _write(out: str | os.PathLike[str], text: str) -> None:
    try:
        write_text_atomic(out, text)
    except OSError as exc:
        raise AlexfeatError(f"cannot write {out} ({exc.strerror}); choose a writable place") from None


def write_page(
    results: Sequence[QueryResult], images_root: Path, out: str | os.PathLike[str], title: str = "alexfeat search"
) -> None:
    """Write the search results page to ``out`` atomically."""
    _write(out, render_page(results, images_root, title))


def write_groups_page(
    groups: Sequence[Sequence[Member]], images_root: Path, out: str | os.PathLike[str], title: str = "alexfeat dedup"
) -> None:
    """Write the near-duplicate groups page to ``out`` atomically."""
    _write(out, render_groups_page(groups, images_root, title))
