"""Self-contained HTML contact sheets: thumbnails inlined as data URIs, so one file travels alone."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence

THUMBNAIL = 160

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
section {{ margin-bottom: 2em; }}
.row {{ display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }}
figure {{ margin: 0; width: {size}px; }}
figure.query, figure.keeper {{ outline: 3px solid #3a7; }}
figure.proposed {{ outline: 2px dashed #c60; }}
.badge {{ font-weight: bold; color: #3a7; }}
.badge.proposed {{ color: #c60; }}
img {{ max-width: {size}px; max-height: {size}px; display: block; }}
.missing {{ width: {size}px; height: {size}px; background: #eee; display: flex; align-items: center; justify-content: center; }}
figcaption {{ font-size: 12px; word-break: break-all; }}
</style></head><body>
<h1>{title}</h1>
{body}
</body></html>
"""


def _thumbnail(path: str) -> str:
    from ..featurize.images.decode import load_image

    try:
        image = load_image(path, draft_size=THUMBNAIL)
    except Exception:  # noqa: BLE001 - a sheet with a grey box beats no sheet
        return '<div class="missing">unreadable</div>'
    image.thumbnail((THUMBNAIL, THUMBNAIL))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=80)
    return f'<img alt="" src="data:image/jpeg;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _figure(path: str, caption: str, css: str = "") -> str:
    return (f'<figure class="{css}">{_thumbnail(path)}<figcaption>{html.escape(caption)}<br>'
            f"{html.escape(path)}</figcaption></figure>")


def query_sheet(results: Sequence[tuple[str, Sequence]]) -> str:
    """One section per query: the query, then its hits (objects with ``rank``, ``score``, ``path``)."""
    sections = []
    for query, hits in results:
        figures = [_figure(query, "query", "query")]
        figures += [_figure(hit.path, f"#{hit.rank}  {hit.score:.3f}") for hit in hits]
        sections.append(f'<section><div class="row">{"".join(figures)}</div></section>')
    return _PAGE.format(title="lookalike: nearest images", size=THUMBNAIL, body="\n".join(sections))


def groups_sheet(groups: Sequence) -> str:
    """One section per duplicate group (``dupes.groups.Group``): the keeper first, badged, then the others with why."""
    sections = []
    for number, group in enumerate(groups, 1):
        figures = []
        for member in group.members:
            css = "keeper" if member is group.keeper else ("proposed" if member.proposed else "")
            badge = "KEEP" if member is group.keeper else ("MOVE" if member.proposed else "missing" if member.missing else "keep")
            figures.append(f'<figure class="{css}">{_thumbnail(member.path)}<figcaption>'
                           f'<span class="badge {css}">{badge}</span> {member.score:.3f}<br>'
                           f"{html.escape(member.reason)}<br>{html.escape(member.path)}</figcaption></figure>")
        sections.append(f'<section><h2>Group {number}: {group.kind}, {len(group.members)} images</h2>'
                        f'<div class="row">{"".join(figures)}</div></section>')
    return _PAGE.format(title="lookalike: duplicates", size=THUMBNAIL, body="\n".join(sections))
