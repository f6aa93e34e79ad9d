"""The atlas' static site: HTML pages made from the atlas' records, plain CSS and a little
JavaScript. No external requests; every link names a file, so the site opens from disk as well
as from any static web server. Pages depend only on the records (no clock, no host), so the
same records always give the same bytes.

    index.html               the model card and one row per layer
    <layer>.html             every channel as a thumbnail: sort by channel/activation/robustness,
                             filter by channel
    <layer>/<channel>.html   the image, its variants, its negative, the natural exemplars, the
                             figures, and the commands that reproduce them
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from featviz.description import LayerInfo, ModelDescription
from featviz.options import OPTIONS, flag

Record = dict[str, Any]


@dataclass(frozen=True)
class Settings:
    """How the atlas renders each channel (what its records and commands say)."""

    size: int
    steps: int | None
    preset: str | None
    seed: int
    variants: int
    diversity: float
    exemplars: int  # 0: the server's default number


@dataclass(frozen=True)
class Channel:
    """One channel's records, each None until rendered: the image, the variants, the negative
    (unit records: `request`, the keywords of its Maximize; `images` with file, seed, activation,
    robust_activation; `steps`) and its natural exemplars (`top`/`bottom` lists)."""

    layer: str
    channel: int
    image: Record | None
    variants: Record | None
    negative: Record | None
    exemplars: Record | None

    @property
    def complete(self) -> bool:
        return None not in (self.image, self.variants, self.negative, self.exemplars)


def number(value: float | None) -> str:
    """A figure as shown: one decimal from 10 up, three significant digits below, or a dash."""
    if value is None:
        return "—"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _page(title: str, css: str, body: str, script: str | None = None) -> str:
    scripts = f'\n<script src="{script}"></script>' if script else ""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n"
        f'<link rel="stylesheet" href="{css}">\n'
        # An empty icon: a browser would otherwise ask for /favicon.ico.
        '<link rel="icon" href="data:,">\n'
        f"</head>\n<body>\n{body}{scripts}\n</body>\n</html>\n"
    )


# ---------------------------------------------------------------------------------------------
# index.html


def index_page(
    description: ModelDescription, settings: Settings, layers: Sequence[tuple[LayerInfo, int, int]]
) -> str:
    """The model card and one row per layer: (layer, channels rendered, channels chosen)."""
    weights, spec = description.weights, description.input
    card = [
        ("model", description.model_name),
        ("parameters", f"{description.total_parameters:,}"),
        ("weights", weights.source),
        ("weights sha256", weights.sha256),
        (
            "input",
            f"{spec.channel_order} {spec.layout}, values {spec.value_min:g}..{spec.value_max:g}, "
            f"sizes {spec.min_size}..{spec.max_size}",
        ),
        ("preprocessing", spec.preprocessing),
        ("server device", description.device),
        ("images", _recipe_text(settings)),
    ]
    rows = []
    for layer, done, chosen in layers:
        shape = "&times;".join(map(str, layer.output_shape))
        name = _e(layer.name)
        link = f'<a href="{name}.html">{name}</a>' if done else name
        rows.append(
            f"<tr><td>{link}</td><td>{_e(layer.kind)}</td><td>{shape}</td>"
            f"<td>{layer.parameters:,}</td><td>{layer.receptive_field}</td>"
            f"<td>{layer.stride}</td><td>{done} / {chosen} of {layer.channels}</td></tr>"
        )
    body = (
        f"<header><h1>{_e(description.model_name)} atlas</h1></header>\n<main>\n"
        '<section class="card"><h2>Model card</h2>\n<dl>\n'
        + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>\n" for k, v in card)
        + "</dl></section>\n"
        f"<section><h2>Layers</h2>\n<p>Shapes at {description.input_size}&times;"
        f"{description.input_size} px input.</p>\n"
        '<table class="layers"><thead><tr><th>layer</th><th>kind</th>'
        "<th>output (H&times;W&times;C)</th>"
        "<th>parameters</th><th>receptive field</th><th>stride</th><th>channels rendered</th>"
        "</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody></table></section>\n</main>"
    )
    return _page(f"{description.model_name} atlas", "atlas.css", body)


def _variants_text(settings: Settings) -> str:
    if settings.diversity:
        return f"diversity weight {settings.diversity:g}"
    return "further seeds, no diversity penalty"


def _recipe_text(settings: Settings) -> str:
    steps = f"{settings.steps} steps" if settings.steps else "the preset's steps"
    preset = settings.preset or "default"
    exemplars = settings.exemplars or "the server's default number of"
    return (
        f"{settings.size} px, {steps}, {preset} preset, seed {settings.seed}; "
        f"{settings.variants} variants ({_variants_text(settings)}), "
        f"{exemplars} top and bottom natural exemplars"
    )


# ---------------------------------------------------------------------------------------------
# <layer>.html


def layer_page(layer: LayerInfo, channels: Sequence[Channel]) -> str:
    """Every rendered channel of `layer` as a thumbnail linking to its page."""
    cards = []
    for c in channels:
        if c.image is None:
            continue
        image = c.image["images"][0]
        activation, robust = image["activation"], image.get("robust_activation")
        cards.append(
            f'<a class="unit" href="{_e(layer.name)}/{c.channel}.html" data-channel="{c.channel}"'
            f' data-activation="{activation!r}" data-robust="{"" if robust is None else robust!r}">'
            f'<img src="{_e(layer.name)}/{_e(image["file"])}" alt="channel {c.channel}"'
            f' width="96" height="96">'
            f"<span>{c.channel}</span><span>{number(activation)}</span>"
            f"<span>{number(robust)}</span></a>"
        )
    body = (
        f'<header><nav><a href="index.html">atlas</a></nav><h1>{_e(layer.name)}</h1>'
        f"<p>{len(cards)} of {layer.channels} channels · each tile: channel, activation, "
        "robust activation</p></header>\n<main>\n"
        '<form class="controls" onsubmit="return false">'
        '<label>sort by <select id="sort"><option value="channel">channel</option>'
        '<option value="activation">activation</option>'
        '<option value="robust">robust activation</option></select></label> '
        '<label>channels <input id="filter" type="search" placeholder="e.g. 3,7,10-20"></label>'
        ' <output id="shown"></output></form>\n'
        f'<div id="units" class="grid">\n' + "\n".join(cards) + "\n</div>\n</main>"
    )
    return _page(layer.name, "atlas.css", body, "atlas.js")


# ---------------------------------------------------------------------------------------------
# <layer>/<channel>.html


def channel_page(
    channel: Channel, settings: Settings, previous: int | None, following: int | None
) -> str:
    """One channel: images, exemplars, figures and the commands that reproduce them."""
    assert channel.image is not None and channel.variants is not None
    assert channel.negative is not None and channel.exemplars is not None
    layer, c = channel.layer, channel.channel
    image = channel.image["images"][0]
    negative = channel.negative["images"][0]
    nav = ['<a href="../index.html">atlas</a>', f'<a href="../{_e(layer)}.html">{_e(layer)}</a>']
    if previous is not None:
        nav.append(f'<a href="{previous}.html" rel="prev">← {previous}</a>')
    if following is not None:
        nav.append(f'<a href="{following}.html" rel="next">{following} →</a>')
    figures = [
        ("activation", number(image["activation"]), number(negative["activation"])),
        (
            "robust activation",
            number(image.get("robust_activation")),
            number(negative.get("robust_activation")),
        ),
        ("steps", channel.image["steps"], channel.negative["steps"]),
        ("seed", image["seed"], negative["seed"]),
    ]
    table = "".join(f"<tr><th>{k}</th><td>{a}</td><td>{b}</td></tr>" for k, a, b in figures)
    variants = "".join(
        _tile(v["file"], f"seed {v['seed']}", f"activation {number(v['activation'])}")
        for v in channel.variants["images"]
    )
    top = "".join(_exemplar(e, "activation", e["activation"]) for e in channel.exemplars["top"])
    bottom = "".join(
        _exemplar(e, "pre-activation", e["pre_activation"]) for e in channel.exemplars["bottom"]
    )
    commands = "\n".join(
        _command(layer, c, record, kind)
        for kind, record in (
            ("image", channel.image),
            ("variants", channel.variants),
            ("negative", channel.negative),
        )
    )
    body = (
        f"<header><nav>{' · '.join(nav)}</nav><h1>{_e(layer)} · channel {c}</h1></header>\n"
        "<main>\n"
        '<section class="hero">'
        f'<figure><img src="{_e(image["file"])}" alt="channel {c}" class="full">'
        "<figcaption>maximizes the channel</figcaption></figure>"
        f'<figure><img src="{_e(negative["file"])}" alt="channel {c}, negative" class="full">'
        "<figcaption>negative: minimizes it</figcaption></figure>"
        '<table class="figures"><thead><tr><th></th><th>image</th><th>negative</th></tr>'
        f"</thead><tbody>{table}</tbody></table></section>\n"
        f"<section><h2>Variants</h2><p>{_variants_text(settings).capitalize()}.</p>"
        f'<div class="row">{variants}</div></section>\n'
        "<section><h2>Natural exemplars</h2>"
        f"<p>Crops of {_e(channel.exemplars['collection'])} that excite the channel most "
        "(mean activation over the crop) and inhibit it most (mean before the ReLU).</p>"
        f'<h3>Top</h3><div class="row">{top}</div>'
        f'<h3>Bottom</h3><div class="row">{bottom}</div></section>\n'
        f"<section><h2>Reproduce</h2><pre><code>{commands}</code></pre></section>\n</main>"
    )
    return _page(f"{layer} {c}", "../atlas.css", body)


def _tile(file: str, *lines: str) -> str:
    caption = "<br>".join(_e(line) for line in lines)
    image = f'<img src="{_e(file)}" alt="{_e(lines[0])}">'
    return f"<figure>{image}<figcaption>{caption}</figcaption></figure>"


def _exemplar(exemplar: Record, what: str, value: float) -> str:
    where = f"{exemplar['source']} ({exemplar['x']}, {exemplar['y']}) {exemplar['side']} px"
    return (
        f'<figure title="{_e(where)}"><img src="{_e(exemplar["file"])}" alt="{_e(where)}">'
        f"<figcaption>{what} {number(value)}<br><small>{_e(exemplar['source'])}</small>"
        "</figcaption></figure>"
    )


def _command(layer: str, channel: int, record: Record, kind: str) -> str:
    """The CLI command that repeats `record`'s run: a flag per keyword of its request."""
    request = record["request"]
    words = ["featviz", "maximize", layer, str(channel)]
    for name in OPTIONS:
        value = request.get(name)
        if value is None or value is False:  # unset: the preset's (e.g. the steps it stopped at)
            continue
        words.append(flag(name))
        if value is not True:
            words.append(f"{value:g}" if isinstance(value, float) else str(value))
    output = {"variants": "_variants/", "negative": "_negative.png"}.get(kind, ".png")
    return _e(" ".join([*words, "-o", f"{layer}_{channel}{output}"]))


# ---------------------------------------------------------------------------------------------
# atlas.css, atlas.js

CSS = """\
:root { color-scheme: light; --ink: #1d232a; --muted: #5b6670; --line: #d8dee4; --tile: 96px; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, sans-serif; color: var(--ink); background: #f6f8fa; }
header, main { max-width: 1200px; margin: 0 auto; padding: 12px 20px; }
header h1 { margin: 4px 0; font-size: 1.6em; }
header p, figcaption, small { color: var(--muted); }
nav a { margin-right: 4px; }
a { color: #0b5cad; }
h2 { font-size: 1.15em; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 1em; margin: 12px 0 6px; }
table { border-collapse: collapse; background: #fff; }
th, td { border: 1px solid var(--line); padding: 4px 10px; text-align: left; }
.card dl { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 0; }
.card dt { color: var(--muted); }
.card dd { margin: 0; overflow-wrap: anywhere; }
.controls { display: flex; gap: 16px; align-items: center; margin-bottom: 12px; }
.grid { display: grid; gap: 8px;
  grid-template-columns: repeat(auto-fill, minmax(calc(var(--tile) + 8px), 1fr)); }
.unit { display: grid; grid-template-columns: 1fr 1fr; background: #fff; padding: 4px;
  border: 1px solid var(--line); text-decoration: none; color: var(--ink); font-size: 12px; }
.unit img, .unit span:first-of-type { grid-column: 1 / -1; }
.unit img { width: 100%; height: auto; aspect-ratio: 1; }
.unit span:nth-of-type(2), .unit span:nth-of-type(3) { color: var(--muted); }
.unit span:nth-of-type(3) { text-align: right; }
.unit:hover { outline: 2px solid #0b5cad; }
.unit[hidden] { display: none; }
.hero { display: flex; flex-wrap: wrap; gap: 20px; align-items: flex-start; }
img.full { width: 320px; height: 320px; image-rendering: auto; }
figure { margin: 0; }
.row { display: flex; flex-wrap: wrap; gap: 10px; }
.row img { width: 128px; height: 128px; }
.row figcaption { max-width: 128px; font-size: 12px; overflow-wrap: anywhere; }
pre { background: #fff; border: 1px solid var(--line); padding: 10px; overflow-x: auto; }
"""

JS = """\
// Sorting and filtering of a layer page's tiles; no requests, no dependencies.
(function () {
  "use strict";
  var grid = document.getElementById("units");
  var sort = document.getElementById("sort");
  var filter = document.getElementById("filter");
  var shown = document.getElementById("shown");
  var tiles = Array.prototype.slice.call(grid.children);

  function value(tile, key) {
    var text = tile.dataset[key];
    return text === "" ? -Infinity : Number(text);
  }

  function wanted(text) {
    // "3,7,10-20" -> a test of channel numbers; empty or malformed parts match nothing extra.
    var parts = text.split(",").map(function (p) { return p.trim(); }).filter(Boolean);
    if (!parts.length) { return function () { return true; }; }
    var ranges = parts.map(function (p) {
      var m = /^(\\d+)(?:\\s*-\\s*(\\d+))?$/.exec(p);
      return m ? [Number(m[1]), Number(m[2] || m[1])] : [1, 0];
    });
    return function (c) {
      return ranges.some(function (r) { return c >= r[0] && c <= r[1]; });
    };
  }

  function update() {
    var key = sort.value;
    tiles.sort(function (a, b) {
      if (key === "channel") { return value(a, "channel") - value(b, "channel"); }
      return value(b, key) - value(a, key) || value(a, "channel") - value(b, "channel");
    });
    var test = wanted(filter.value);
    var count = 0;
    tiles.forEach(function (tile) {
      tile.hidden = !test(value(tile, "channel"));
      if (!tile.hidden) { count += 1; }
      grid.appendChild(tile);
    });
    shown.textContent = count + " shown";
  }

  sort.addEventListener("change", update);
  filter.addEventListener("input", update);
  update();
})();
"""
