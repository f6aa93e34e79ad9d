"""Domain -> proto: the model description, PNG images, the Maximize and FindExemplars streams'
messages.

gRPC refuses messages over 4 MiB by default, so images are packed greedily into messages of at
most MESSAGE_BUDGET bytes of PNG. One image alone always fits: the largest allowed image
(config.LARGEST_ALLOWED_SIZE, 1024 px) is at most ~3.01 MiB even as incompressible PNG.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator

import numpy as np
from PIL import Image as PILImage

from featviz import enums
from featviz.contract import field_help
from featviz.v1 import featviz_pb2 as pb

from .. import engine
from ..architecture import MIN_INPUT_SIZE, MODEL_NAME, TOTAL_PARAMETERS, geometry
from ..config import Settings
from ..engine import schema
from ..exemplars import Exemplar
from ..model import CHANNEL_ORDER, LAYOUT, PREPROCESSING, VALUE_MAX, VALUE_MIN
from ..weights import Weights
from . import validation
from .exemplar_search import ChannelExemplars, ExemplarEvent, ExemplarsDone
from .validation import MAX_INIT_IMAGE_BYTES

MESSAGE_BUDGET = 3 * 1024 * 1024
# Previews favour speed (they are many and transient); final images favour size.
PREVIEW_COMPRESSION, FINAL_COMPRESSION = 1, 6


def describe(
    weights: Weights, device: str, input_size: int, settings: Settings
) -> pb.DescribeModelResponse:
    """The network, its weights' provenance, each layer's geometry at `input_size`, and the
    recipe's schema: every field, every preset's values, this server's limits."""
    layers = [
        pb.LayerInfo(
            name=g.layer.name,
            kind=enums.value(pb.LayerKind, g.layer.kind),
            channels=g.layer.channels,
            parameters=g.layer.parameters,
            output_height=g.output_height,
            output_width=g.output_width,
            receptive_field=g.receptive_field,
            stride=g.stride,
        )
        for g in geometry(input_size)
    ]
    return pb.DescribeModelResponse(
        model_name=MODEL_NAME,
        weights=pb.WeightsInfo(source=weights.source, sha256=weights.sha256),
        input=pb.InputSpec(
            channel_order=CHANNEL_ORDER,
            layout=LAYOUT,
            value_min=VALUE_MIN,
            value_max=VALUE_MAX,
            preprocessing=PREPROCESSING,
            min_size=MIN_INPUT_SIZE,
            max_size=settings.max_size,
        ),
        total_parameters=TOTAL_PARAMETERS,
        input_size=input_size,
        layers=layers,
        device=device,
        recipe_fields=[_recipe_field(f, settings) for f in schema.FIELDS],
        presets=[
            pb.PresetInfo(
                preset=enums.value(pb.Preset, name),
                name=name,
                description=engine.presets.DESCRIPTIONS[name],
                values=[_recipe_value(f, schema.value(recipe, f.name)) for f in schema.FIELDS],
            )
            for name, recipe in engine.PRESETS.items()
        ],
        default_preset=enums.value(pb.Preset, engine.DEFAULT_PRESET),
        limits=pb.RequestLimits(
            max_channels=settings.max_channels,
            max_images_per_channel=settings.max_images_per_channel,
            max_images=settings.max_images,
            max_init_image_bytes=MAX_INIT_IMAGE_BYTES,
        ),
    )


def _recipe_field(field: schema.Field, settings: Settings) -> pb.RecipeField:
    low, high = schema.bounds(field, validation.limits(settings))
    return pb.RecipeField(
        name=field.name,
        help=field.spec.help or field_help(pb.MaximizeRequest.DESCRIPTOR, field.spec.request),
        type=enums.value(pb.RecipeFieldType, field.type),
        minimum=low,
        maximum=high,
        choices=field.choices,
        request_field=field.spec.request,
        constraint=field.spec.constraint,
    )


def _recipe_value(field: schema.Field, value: object) -> pb.RecipeValue:
    if field.type == "bool":
        return pb.RecipeValue(name=field.name, flag=bool(value))
    if field.type == "choice":
        return pb.RecipeValue(name=field.name, choice=str(value))
    return pb.RecipeValue(name=field.name, number=float(value))  # type: ignore[arg-type]


def queued(position: int) -> pb.MaximizeResponse:
    return pb.MaximizeResponse(queued=pb.QueuePosition(position=position))


def progress(
    update: engine.Progress, job: engine.Job, preview_size: int, with_images: bool
) -> list[pb.MaximizeResponse]:
    """One progress update: one message, or several with the same step when previews are big.

    Every part repeats the (small) objective list, so that any part alone is a valid update.
    """
    previews = _images(update.images, job, preview_size, PREVIEW_COMPRESSION) if with_images else []
    return [
        pb.MaximizeResponse(
            progress=pb.Progress(
                step=update.step,
                total_steps=update.total_steps,
                objective=update.objective,
                previews=part,
            )
        )
        for part in _packed(previews)
    ]


def final(
    result: engine.RenderResult, job: engine.Job, queued_seconds: float, *, cached: bool = False
) -> list[pb.MaximizeResponse]:
    """The full-size images (split over messages as needed), then the run summary (last)."""
    images = _images(result.images, job, 0, FINAL_COMPRESSION)
    messages = [
        pb.MaximizeResponse(final_images=pb.FinalImages(images=part)) for part in _packed(images)
    ]
    duration = result.duration_seconds
    summary = pb.RunSummary(
        activation=result.activation,
        objective=result.objective,
        steps=result.steps,
        duration_seconds=duration,
        steps_per_second=result.steps / duration if duration > 0 and not cached else 0.0,
        device=result.device,
        queued_seconds=queued_seconds,
        cached=cached,
        robust_activation=result.robust_activation,
        saturated_fraction=result.saturated_fraction,
        stop_reason=enums.value(pb.StopReason, result.stop_reason),
    )
    return [*messages, pb.MaximizeResponse(summary=summary)]


def exemplar_update(event: ExemplarEvent) -> list[pb.FindExemplarsResponse]:
    """The FindExemplars messages for an ExemplarSearch event (PNG encoding: run in a thread).

    A channel's crops are packed greedily into messages of at most MESSAGE_BUDGET bytes of PNG,
    in order (top, then bottom), all naming the channel: most often one message.
    """
    if isinstance(event, ChannelExemplars):
        parts = [pb.ChannelExemplars(channel=event.channel)]
        size = 0
        for side in ("top", "bottom"):
            for exemplar, pixels in getattr(event, side):
                message = _exemplar(exemplar, pixels)
                if size and size + len(message.png) > MESSAGE_BUDGET:
                    parts.append(pb.ChannelExemplars(channel=event.channel))
                    size = 0
                getattr(parts[-1], side).append(message)
                size += len(message.png)
        return [pb.FindExemplarsResponse(channel=part) for part in parts]
    if isinstance(event, ExemplarsDone):
        return [pb.FindExemplarsResponse(summary=pb.ExemplarsSummary(**dataclasses.asdict(event)))]
    return [pb.FindExemplarsResponse(progress=pb.ScanProgress(**dataclasses.asdict(event)))]


def _exemplar(exemplar: Exemplar, pixels: np.ndarray) -> pb.Exemplar:
    crop = exemplar.crop
    data, width, height = png(pixels, 0, FINAL_COMPRESSION)
    return pb.Exemplar(
        png=data,
        width=width,
        height=height,
        activation=exemplar.activation,
        pre_activation=exemplar.pre_activation,
        source=crop.source,
        x=crop.x,
        y=crop.y,
        side=crop.side,
    )


def png(image: np.ndarray, max_side: int, compression: int) -> tuple[bytes, int, int]:
    """PNG (bytes, width, height) of an (H, W, 3) uint8 RGB array, its longer side <= max_side."""
    picture = PILImage.fromarray(image, "RGB")
    if max_side and max(picture.size) > max_side:
        picture.thumbnail((max_side, max_side), PILImage.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, "PNG", compress_level=compression)
    return buffer.getvalue(), *picture.size


def _images(images: np.ndarray, job: engine.Job, max_side: int, compression: int) -> list[pb.Image]:
    result = []
    for index, ((channel, seed), array) in enumerate(zip(job.images, images, strict=True)):
        data, width, height = png(array, max_side, compression)
        result.append(
            pb.Image(index=index, channel=channel, seed=seed, png=data, width=width, height=height)
        )
    return result


def _packed(images: list[pb.Image]) -> Iterator[list[pb.Image]]:
    """Consecutive groups of images of at most MESSAGE_BUDGET PNG bytes; at least one group."""
    group: list[pb.Image] = []
    size = 0
    for image in images:
        if group and size + len(image.png) > MESSAGE_BUDGET:
            yield group
            group, size = [], 0
        group.append(image)
        size += len(image.png)
    yield group
