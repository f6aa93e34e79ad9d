"""Results in Jupyter: a labelled grid of the images with their figures (`Result._repr_html_`
calls `result_html`), and `live`, which shows a run's previews in the cell as they stream and
ends with the result. IPython is imported only when something is displayed live.

Example (in a notebook cell)::

    import featviz
    from featviz.notebook import live

    client = featviz.Client("localhost:50051")
    result = live(client.stream_maximize("block1_conv2", "0-7", size=64, steps=32))
    result  # the grid, with activations
"""

from __future__ import annotations

import base64
import html
from collections.abc import AsyncIterable, Iterable, Sequence
from typing import Any

from featviz.figures import robust_activations
from featviz.result import Finished, Image, Progress, Queued, Result, Retrying, Update

_GRID = "display:flex;flex-wrap:wrap;gap:8px;font:12px/1.3 sans-serif"
_TILE = "margin:0;text-align:center"


def _tile(image: Image, lines: Sequence[str], side: int = 128) -> str:
    data = base64.b64encode(image.png).decode()
    caption = "<br>".join(html.escape(line) for line in lines)
    return (
        f'<figure style="{_TILE}"><img src="data:image/png;base64,{data}" width="{side}" '
        f'height="{side}" style="image-rendering:auto" alt="{html.escape(lines[0])}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def result_html(result: Result) -> str:
    """The result as HTML: one tile per image (channel, seed, activation, robust activation),
    under a line of statistics."""
    stats = result.statistics
    cached = ", from the cache" if stats.cached else ""
    header = (
        f"<div><b>{html.escape(result.layer)}</b>: {len(result.images)} image(s), "
        f"{stats.steps} steps in {stats.duration_seconds:.1f} s on {html.escape(stats.device)}"
        f"{cached}</div>"
    )
    tiles = [
        _tile(
            image,
            [
                f"channel {image.channel} · seed {image.seed}",
                f"activation {_number(activation)}",
                f"robust {_number(robust)}",
            ],
        )
        for image, activation, robust in zip(
            result.images, result.activations, robust_activations(result), strict=True
        )
    ]
    return f'<div>{header}<div style="{_GRID}">{"".join(tiles)}</div></div>'


def progress_html(update: Update) -> str:
    """A stream update as HTML: the step and each preview with its objective."""
    if isinstance(update, Progress):
        tiles = [
            _tile(
                p,
                [
                    f"channel {p.channel} · seed {p.seed}",
                    f"objective {update.objective[p.index]:.4g}",
                ],
            )
            for p in update.previews
        ]
        return (
            f"<div><div>step {update.step}/{update.total_steps}</div>"
            f'<div style="{_GRID}">{"".join(tiles)}</div></div>'
        )
    if isinstance(update, Queued):
        return f"<div>queued, position {update.position}</div>"
    if isinstance(update, Retrying):
        return f"<div>{html.escape(str(update))}</div>"
    assert isinstance(update, Finished)
    return result_html(update.result)


class _Cell:
    """One display area of the running cell, updated in place."""

    def __init__(self) -> None:
        from IPython.display import HTML, display

        self._html = HTML
        # Outside a notebook (no IPython shell) `display` prints the object and returns None.
        self._handle: Any = display(HTML("<div>starting…</div>"), display_id=True)

    def show(self, markup: str) -> None:
        if self._handle is not None:
            self._handle.update(self._html(markup))


def live(updates: Iterable[Update]) -> Result:
    """Show `updates` (from `Client.stream_maximize`) in the cell as they come, one display
    updated in place, and return the result.

    Example::

        result = live(client.stream_maximize("block5_conv2", 410, size=64, steps=16))
    """
    cell = _Cell()
    for update in updates:
        cell.show(progress_html(update))
        if isinstance(update, Finished):
            return update.result
    raise AssertionError("unreachable: the stream ends with Finished or raises")


async def live_async(updates: AsyncIterable[Update]) -> Result:
    """`live` for `AsyncClient.stream_maximize`.

    Example::

        result = await live_async(client.stream_maximize("block5_conv2", 410, size=64, steps=16))
    """
    cell = _Cell()
    async for update in updates:
        cell.show(progress_html(update))
        if isinstance(update, Finished):
            return update.result
    raise AssertionError("unreachable: the stream ends with Finished or raises")
