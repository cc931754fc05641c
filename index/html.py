"""The results pages: one self-contained HTML file, each search query beside its neighbours with their scores, or
each group of near-duplicates with each member's score to the group's first.

Thumbnails are inline base64 JPEGs, so the page can be mailed or archived. The indexed images are read through
the dataset's source (``extractor.images.sources.read_stored``: a folder, tar shards, an object store, all the
page's images in one go); one that cannot be read now (deleted, or the store unreachable) shows as a labelled
placeholder instead of breaking the page, and the page says how many.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from extractor.errors import AlexfeatError
from extractor.images.sources import read_stored
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


@dataclass
class Thumbnails:
    """The page's thumbnails by stored path (None: unavailable), and why the first unavailable one was."""

    uris: dict[str, str | None] = field(default_factory=dict)
    first_error: str = ""

    @property
    def missing(self) -> int:
        return sum(uri is None for uri in self.uris.values())


def load_thumbnails(images_root: str, paths: Sequence[str]) -> Thumbnails:
    """Thumbnails of the stored ``paths`` of a dataset recorded with ``images_root``, read through its source."""
    unique = list(dict.fromkeys(paths))
    thumbs = Thumbnails()
    for path, data in zip(unique, read_stored(images_root, unique)):
        if isinstance(data, OSError):
            log.info("no thumbnail for %s: %s", path, data)  # the command prints how many, and the first
            thumbs.first_error = thumbs.first_error or f"{path}: {data}"
            thumbs.uris[path] = None
        else:
            thumbs.uris[path] = thumbnail_uri(data, name=path)
    return thumbs


def thumbnail_jpeg(image: Path | bytes, size: int = THUMB_SIZE, name: str | None = None) -> bytes | None:
    """A JPEG thumbnail of an image file or its bytes (EXIF-oriented, at most ``size`` pixels a side), None if it
    cannot be decoded (``name`` labels the warning)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(image) if isinstance(image, bytes) else image) as opened:
            opened.draft("RGB", (size * 2, size * 2))
            thumb = ImageOps.exif_transpose(opened).convert("RGB")
            thumb.thumbnail((size, size))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        log.warning("no thumbnail for %s: %s", name or (image if isinstance(image, Path) else "<bytes>"), exc)
        return None
    buffer = io.BytesIO()
    thumb.save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


def thumbnail_uri(image: Path | bytes, size: int = THUMB_SIZE, name: str | None = None) -> str | None:
    """A ``data:image/jpeg;base64,...`` thumbnail of an image file or its bytes, None if it cannot be decoded."""
    jpeg = thumbnail_jpeg(image, size, name)
    return None if jpeg is None else "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def _figure(uri: str | None, caption: str, css: str = "") -> str:
    picture = f'<img src="{uri}" alt="">' if uri else '<div class="missing">image not available</div>'
    return f'<figure class="{css}">{picture}<figcaption>{caption}</figcaption></figure>'


def _hit_caption(hit: Hit) -> str:
    label = f"<br>{html.escape(hit.label)}" if hit.label is not None else ""
    return f'#{hit.rank} <span class="score">{hit.score:.3f}</span>{label}<br>{html.escape(hit.path)}<br>id {hit.id}'


def _query_title(result: QueryResult) -> str:
    if "image" in result.query:
        return f"image {result.query['image']}"
    return f"id {result.query['id']} · {result.query['path']}"


def render_page(
    results: Sequence[QueryResult], images_root: str, title: str = "alexfeat search"
) -> tuple[str, Thumbnails]:
    """The HTML page for ``results`` and its thumbnails; indexed images are read from ``images_root`` (the
    dataset's recorded root, a folder or URL)."""
    stored = [hit.path for result in results for hit in result.hits]
    stored += [result.query["path"] for result in results if result.image_file is None and "path" in result.query]
    thumbs = load_thumbnails(images_root, stored)
    sections = []
    for result in results:
        query_uri = (
            thumbnail_uri(result.image_file)
            if result.image_file is not None
            else thumbs.uris.get(result.query.get("path", ""))
        )
        figures = [_figure(query_uri, "query", "query")]
        figures += [_figure(thumbs.uris[hit.path], _hit_caption(hit)) for hit in result.hits]
        sections.append(
            f'<section><h2>{html.escape(_query_title(result))}</h2><div class="row">{"".join(figures)}</div></section>'
        )
    unavailable = f"; {thumbs.missing} images not available there now" if thumbs.missing else ""
    meta = f"queries: {len(results)}; score = cosine similarity; images from {html.escape(images_root)}{unavailable}"
    return _document(title, meta, sections), thumbs


def _document(title: str, meta: str, sections: list[str]) -> str:
    """The page around ``sections``; ``title`` is escaped here, ``meta`` and ``sections`` must be HTML already."""
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f'<p class="meta">{meta}</p>{"".join(sections)}</body></html>\n'
    )


def render_groups_page(
    groups: Sequence[Sequence[Member]], images_root: str, title: str = "alexfeat dedup"
) -> tuple[str, Thumbnails]:
    """The HTML page of near-duplicate groups (each group's first member, then the others with their scores) and
    its thumbnails, read from ``images_root`` (the dataset's recorded root, a folder or URL)."""
    thumbs = load_thumbnails(images_root, [m.path for group in groups for m in group])
    sections = []
    for number, group in enumerate(groups, 1):
        figures = [_figure(thumbs.uris[group[0].path], f"first<br>{html.escape(group[0].path)}", "query")]
        figures += [
            _figure(thumbs.uris[m.path], f'<span class="score">{m.score:.3f}</span><br>{html.escape(m.path)}')
            for m in group[1:]
        ]
        sections.append(
            f'<section><h2>group {number}: {len(group)} images</h2><div class="row">{"".join(figures)}</div></section>'
        )
    unavailable = f"; {thumbs.missing} images not available there now" if thumbs.missing else ""
    meta = f"groups: {len(groups)}; score = similarity to the group's first; images from {html.escape(images_root)}"
    return _document(title, meta + unavailable, sections), thumbs


def _write(out: str | os.PathLike[str], text: str) -> None:
    try:
        write_text_atomic(out, text)
    except OSError as exc:
        raise AlexfeatError(f"cannot write {out} ({exc.strerror}); choose a writable place") from None


def write_page(
    results: Sequence[QueryResult], images_root: str, out: str | os.PathLike[str], title: str = "alexfeat search"
) -> Thumbnails:
    """Write the search results page to ``out`` atomically; returns its thumbnails (how many were unavailable)."""
    page, thumbs = render_page(results, images_root, title)
    _write(out, page)
    return thumbs


def write_groups_page(
    groups: Sequence[Sequence[Member]], images_root: str, out: str | os.PathLike[str], title: str = "alexfeat dedup"
) -> Thumbnails:
    """Write the near-duplicate groups page to ``out`` atomically; returns its thumbnails."""
    page, thumbs = render_groups_page(groups, images_root, title)
    _write(out, page)
    return thumbs
