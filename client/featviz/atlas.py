"""`featviz atlas`: every channel of the chosen layers, rendered through one or several servers
into a static site (atlas_site.py says what the site holds).

Each channel is three units of work, one Maximize each: the image, its variants (more seeds,
with Lucid's diversity penalty when `diversity` is set) and its negative; each layer adds one
FindExemplars. A unit's PNGs are written first, then its record (JSON: the request and the
figures); a unit whose record exists with the same request is done, so a killed atlas continues
where it stopped and renders nothing twice. Every file is written atomically (a temporary file,
then a rename) and only when its bytes change, and pages are made from the records alone, so an
interrupted and resumed atlas ends with the same files, byte for byte, as an uninterrupted one.

Work is spread by stealing: each target server has its own client and `in_flight` workers that
take the next unit from one shared queue, so a faster server takes more, and each server has
enough runs at once for its continuous batching to fill a batch.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featviz.aio import AsyncClient
from featviz.atlas_site import CSS, JS, Channel, Settings, channel_page, index_page, layer_page
from featviz.description import LayerInfo, ModelDescription
from featviz.figures import robust_activations
from featviz.options import parse_channels
from featviz.result import Progress, Update

KINDS = ("image", "variants", "negative")
PART_SUFFIX = ".part"

IN_FLIGHT = 8  # runs each target server is kept busy with, by default


@dataclass(frozen=True)
class Unit:
    """One Maximize of the atlas: a channel's image, its variants or its negative."""

    layer: str
    channel: int
    kind: str

    def request(self, settings: Settings) -> dict[str, Any]:
        """The keywords of `maximize` for this unit (also what its record remembers)."""
        common: dict[str, Any] = {"size": settings.size, "steps": settings.steps}
        if settings.preset:
            common["preset"] = settings.preset
        if self.kind == "variants":
            variants = {"seed": settings.seed + 1, "images_per_channel": settings.variants}
            if settings.diversity:
                variants["diversity"] = settings.diversity
            return {**common, **variants}
        if self.kind == "negative":
            return {**common, "seed": settings.seed, "negate": True}
        return {**common, "seed": settings.seed}

    def images(self, settings: Settings) -> int:
        return settings.variants if self.kind == "variants" else 1

    def files(self, count: int) -> list[str]:
        if self.kind == "variants":
            return [f"{self.channel}_v{i}.png" for i in range(1, count + 1)]
        return [f"{self.channel}_neg.png" if self.kind == "negative" else f"{self.channel}.png"]

    @property
    def record(self) -> str:
        return f"{self.channel}.{self.kind}.json"


class SiteFiles:
    """The atlas' directory: atomic writes that skip unchanged bytes, JSON records."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def remove_partial_writes(self) -> None:
        """Temporary files left by a killed atlas."""
        for path in self.root.rglob(f"*{PART_SUFFIX}"):
            path.unlink(missing_ok=True)

    def write(self, relative: str, data: bytes | str) -> None:
        payload = data.encode() if isinstance(data, str) else data
        path = self.root / relative
        try:
            if path.read_bytes() == payload:
                return
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(path.name + PART_SUFFIX)
        part.write_bytes(payload)
        os.replace(part, path)

    def write_record(self, relative: str, record: dict[str, Any]) -> None:
        self.write(relative, json.dumps(record, indent=1, sort_keys=True) + "\n")

    def record(self, relative: str, request: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """The record, if it exists, is whole and was made for `request` (when given)."""
        try:
            record = json.loads((self.root / relative).read_text())
        except (FileNotFoundError, ValueError):
            return None
        if request is not None and record.get("request") != _normalized(request):
            return None
        return record


def _normalized(value: Any) -> Any:
    """`value` as it reads back from JSON."""
    return json.loads(json.dumps(value))


@dataclass
class Plan:
    """The chosen layers and channels, and which work is left."""

    description: ModelDescription
    layers: list[LayerInfo]
    channels: dict[str, list[int]]
    units: list[Unit] = field(default_factory=list)
    exemplar_layers: list[str] = field(default_factory=list)


def plan(
    description: ModelDescription,
    layers: Sequence[str] | None,
    channels: str | None,
    settings: Settings,
    files: SiteFiles,
) -> Plan:
    """Check the choice against the model and find the work that is not done yet."""
    names = list(layers) if layers else [x.name for x in description.layers if x.kind == "conv"]
    try:
        chosen = [description.layer(name) for name in names]
    except ValueError as error:
        raise ValueError(f"layers: {error}") from None
    wanted = {}
    for layer in chosen:
        indices = parse_channels(channels) if channels else list(range(layer.channels))
        if max(indices) >= layer.channels:
            raise ValueError(
                f"channels: {layer.name} has channels 0..{layer.channels - 1}, not {max(indices)}"
            )
        wanted[layer.name] = sorted(set(indices))
    result = Plan(description, chosen, wanted)
    for layer in chosen:
        request = {"channels": wanted[layer.name], "count": settings.exemplars}
        if files.record(f"{layer.name}/exemplars.json", request) is None:
            result.exemplar_layers.append(layer.name)
        for channel in wanted[layer.name]:
            for kind in KINDS:
                unit = Unit(layer.name, channel, kind)
                if files.record(f"{layer.name}/{unit.record}", unit.request(settings)) is None:
                    result.units.append(unit)
    return result


class Atlas:
    """Renders a plan through `clients` into `files`, then writes the pages."""

    def __init__(
        self,
        plan: Plan,
        settings: Settings,
        files: SiteFiles,
        report: Callable[[float, float, str], None],
    ) -> None:
        self.plan = plan
        self.settings = settings
        self.files = files
        self._report = report
        self._cost = forward_costs(plan.description)
        self._total = sum(self._work(unit) for unit in plan.units)
        self._done = 0.0
        self._partial: dict[Unit, float] = {}
        self._units_done = 0
        self._queue: asyncio.Queue[Unit | str] = asyncio.Queue()
        self._left: dict[str, int] = {}

    async def run(self, clients: Sequence[AsyncClient], in_flight: int) -> None:
        for layer in self.plan.layers:
            name = layer.name
            units = [u for u in self.plan.units if u.layer == name]
            exemplars = name in self.plan.exemplar_layers
            self._left[name] = len(units) + exemplars
            if exemplars:
                self._queue.put_nowait(name)
            for unit in units:
                self._queue.put_nowait(unit)
            if not self._left[name]:
                self.write_layer(layer)
        self.write_index()
        self._progress()
        workers = [
            asyncio.ensure_future(self._worker(client))
            for client in clients
            for _ in range(in_flight)
        ]
        try:
            await asyncio.gather(*workers)
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        self.write_site()

    async def _worker(self, client: AsyncClient) -> None:
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if isinstance(job, Unit):
                await self._render(client, job)
                layer = job.layer
            else:
                await self._exemplars(client, job)
                layer = job
            self._left[layer] -= 1
            if not self._left[layer]:
                self.write_layer(next(x for x in self.plan.layers if x.name == layer))
                self.write_index()

    async def _render(self, client: AsyncClient, unit: Unit) -> None:
        request = unit.request(self.settings)
        weight = self._work(unit)

        def progress(update: Update) -> None:
            if isinstance(update, Progress) and update.total_steps:
                self._partial[unit] = weight * update.step / update.total_steps
                self._progress()

        result = await client.maximize(
            unit.layer, unit.channel, on_progress=progress, preview_images=False, **request
        )
        names = unit.files(len(result.images))
        for name, image in zip(names, result.images, strict=True):
            self.files.write(f"{unit.layer}/{name}", image.png)
        robust = robust_activations(result)
        images = [
            {"file": name, "seed": image.seed, "activation": a, "robust_activation": r}
            for name, image, a, r in zip(
                names, result.images, result.activations, robust, strict=True
            )
        ]
        record = {"request": request, "steps": result.statistics.steps, "images": images}
        self.files.write_record(f"{unit.layer}/{unit.record}", _normalized(record))
        self._partial.pop(unit, None)
        self._done += weight
        self._units_done += 1
        self._progress()

    async def _exemplars(self, client: AsyncClient, layer: str) -> None:
        channels = self.plan.channels[layer]
        found = await client.find_exemplars(layer, channels, count=self.settings.exemplars)
        per_channel = {}
        for exemplars in found.channels:
            sides = {}
            for side in ("top", "bottom"):
                entries = []
                for i, e in enumerate(getattr(exemplars, side)):
                    name = f"{exemplars.channel}_{side}{i}.png"
                    self.files.write(f"{layer}/{name}", e.png)
                    entries.append(
                        {
                            "file": name,
                            "activation": e.activation,
                            "pre_activation": e.pre_activation,
                            "source": e.source,
                            "x": e.x,
                            "y": e.y,
                            "side": e.side,
                        }
                    )
                sides[side] = entries
            per_channel[str(exemplars.channel)] = sides
        record = {
            "request": {"channels": channels, "count": self.settings.exemplars},
            "collection": found.collection,
            "photos": found.photos,
            "crops": found.crops,
            "channels": per_channel,
        }
        self.files.write_record(f"{layer}/exemplars.json", _normalized(record))

    def _work(self, unit: Unit) -> float:
        """What the progress bar counts of a unit: its images, each weighted by a step's cost."""
        return unit.images(self.settings) * self._cost[unit.layer]

    def _progress(self) -> None:
        done = self._done + sum(self._partial.values())
        self._report(done, self._total, f"{self._units_done}/{len(self.plan.units)} units")

    # --- pages ----------------------------------------------------------------------------------

    def channels(self, layer: str) -> list[Channel]:
        exemplars = self.files.record(f"{layer}/exemplars.json") or {"channels": {}}
        result = []
        for c in self.plan.channels[layer]:
            records = {
                kind: self.files.record(
                    f"{layer}/{Unit(layer, c, kind).record}",
                    Unit(layer, c, kind).request(self.settings),
                )
                for kind in KINDS
            }
            found = exemplars["channels"].get(str(c))
            if found is not None:
                found = {**found, "collection": exemplars["collection"]}
            result.append(Channel(layer, c, **records, exemplars=found))
        return result

    def write_layer(self, layer: LayerInfo) -> None:
        channels = self.channels(layer.name)
        complete = [c for c in channels if c.complete]
        for i, channel in enumerate(complete):
            previous = complete[i - 1].channel if i > 0 else None
            following = complete[i + 1].channel if i + 1 < len(complete) else None
            page = channel_page(channel, self.settings, previous, following)
            self.files.write(f"{layer.name}/{channel.channel}.html", page)
        self.files.write(f"{layer.name}.html", layer_page(layer, complete))

    def write_index(self) -> None:
        rows = []
        for layer in self.plan.layers:
            done = sum(c.complete for c in self.channels(layer.name))
            rows.append((layer, done, len(self.plan.channels[layer.name])))
        self.files.write("atlas.css", CSS)
        self.files.write("atlas.js", JS)
        self.files.write("index.html", index_page(self.plan.description, self.settings, rows))

    def write_site(self) -> None:
        for layer in self.plan.layers:
            self.write_layer(layer)
        self.write_index()


def forward_costs(description: ModelDescription) -> dict[str, float]:
    """Each layer's cost of a forward pass up to it, relative to the first layer's: the
    multiply-adds of the conv layers so far (parameters x output positions; pools are free)."""
    costs, total = {}, 0
    for layer in description.layers:
        total += layer.parameters * layer.output_height * layer.output_width
        costs[layer.name] = total
    first = next(iter(costs.values()))
    return {name: cost / first for name, cost in costs.items()}


async def render_atlas(
    clients: Sequence[AsyncClient],
    root: Path,
    settings: Settings,
    *,
    layers: Sequence[str] | None = None,
    channels: str | None = None,
    in_flight: int = IN_FLIGHT,
    report: Callable[[float, float, str], None] = lambda done, total, text: None,
) -> tuple[int, int]:
    """Render the atlas into `root` (resuming what is there) and return (units rendered now,
    units that were already done)."""
    if in_flight < 1:
        raise ValueError(f"in_flight: must be at least 1, got {in_flight}")
    if settings.variants < 1:
        raise ValueError(f"variants: must be at least 1, got {settings.variants}")
    files = SiteFiles(root)
    root.mkdir(parents=True, exist_ok=True)
    files.remove_partial_writes()
    description = await clients[0].describe_model(settings.size)
    work = plan(description, layers, channels, settings, files)
    total = sum(len(c) for c in work.channels.values()) * len(KINDS)
    await Atlas(work, settings, files, report).run(clients, in_flight)
    return len(work.units), total - len(work.units)
