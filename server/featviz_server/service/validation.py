"""Requests -> domain objects, or an InvalidArgument naming the field and what it may be.

Everything is checked before any work starts, against the network's geometry and the server's
configured limits, so that a bad request costs nothing and says exactly what to change.
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, get_args

import numpy as np
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet
from PIL import Image as PILImage
from PIL import ImageOps

from featviz import enums
from featviz.v1 import featviz_pb2 as pb

from .. import engine
from ..architecture import (
    LAYERS_BY_NAME,
    MIN_INPUT_SIZE,
    Layer,
    check_channels,
    layer_geometry,
    layer_named,
)
from ..config import Settings
from ..engine import schema
from ..engine.job import MAX_WEIGHT, ObjectiveKind, TermKind
from ..exemplars import MAX_EXEMPLARS

DEFAULT_DESCRIBE_SIZE = 224
UINT64_MAX = 2**64 - 1
DEFAULT_EXEMPLARS = 8

# The recipe's ranges are in its schema (engine.schema); this one is the request's own.
DIVERSITY = (0.0, MAX_WEIGHT)
# The largest InitImage.data: a 1024 x 1024 RGB PNG of noise is ~3.1 MB; gRPC's limit is 4 MiB.
MAX_INIT_IMAGE_BYTES = 3_500_000
MAX_INIT_IMAGE_SIDE = 4096  # pixels; larger pictures are refused before they are decoded
KEEP_CLOSE = (0.0, MAX_WEIGHT)
MIN_PREVIEW_SIZE = 8


class InvalidArgument(ValueError):
    """A request field is out of its allowed range; `field` is its path, e.g. "channels[3]"."""

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}")
        self.field = field
        self.description = description


@dataclass(frozen=True)
class Maximization:
    """A validated Maximize request: the engine's job plus how to stream its progress."""

    job: engine.Job
    preview_every: int
    preview_size: int  # 0: full size
    preview_images: bool


def describe_size(request: pb.DescribeModelRequest, settings: Settings) -> int:
    """The input size DescribeModel computes shapes for."""
    reject_unknown_fields(request)
    if request.input_size == 0:
        return DEFAULT_DESCRIBE_SIZE
    _check_range("input_size", request.input_size, MIN_INPUT_SIZE, settings.max_size)
    return request.input_size


@dataclass(frozen=True)
class ExemplarQuery:
    """A validated FindExemplars request."""

    layer: str
    channels: tuple[int, ...]
    count: int


def exemplar_query(request: pb.FindExemplarsRequest, settings: Settings) -> ExemplarQuery:
    """Check a FindExemplars request: a known layer, its channels, a count up to the kept."""
    reject_unknown_fields(request)
    layer = _layer(request.layer)
    channels = _channel_indices(request.channels, layer, settings)
    with _field_errors():
        check_channels(layer, channels)
    count = request.count or DEFAULT_EXEMPLARS
    _check_range("count", count, 1, MAX_EXEMPLARS, f"0 ({DEFAULT_EXEMPLARS}) or ")
    return ExemplarQuery(layer.name, channels, count)


def _layer(name: str) -> Layer:
    with _field_errors():
        return layer_named(name)


def maximization(request: pb.MaximizeRequest, settings: Settings) -> Maximization:
    """Check every field of a Maximize request and build the engine's Job from it."""
    reject_unknown_fields(request)
    if request.HasField("expression"):
        return _expression_maximization(request, settings)
    if request.HasField("interpolate_to"):
        known = request.layer in LAYERS_BY_NAME and request.channels  # no echo of unknown text
        start = f"{request.layer}:{request.channels[0]}" if known else "LAYER:CHANNEL"
        raise InvalidArgument(
            "interpolate_to", f"needs an objective expression to start from, such as {start}"
        )
    layer = _layer(request.layer)
    channels = _channel_indices(request.channels, layer, settings)
    per_channel = _images_per_channel(request, settings.max_images_per_channel)
    if len(channels) * per_channel > settings.max_images:
        raise InvalidArgument(
            "images_per_channel" if per_channel > 1 else "channels",
            f"{len(channels)} channels x {per_channel} images per channel = "
            f"{len(channels) * per_channel} images; at most {settings.max_images} per request",
        )
    recipe = _recipe(request, settings, layer.name)
    job = engine.Job(
        layer=layer.name,
        channels=channels,
        recipe=recipe,
        objective=_objective(request.objective, layer, recipe.size),
        seed=_seed(request, per_channel),
        images_per_channel=per_channel,
        init=_init_image(request, recipe.size),
    )
    with _field_errors():
        engine.validate(job)  # the engine's rules: channels and the neuron in range
    return _plan(request, job, settings)


def _plan(request: pb.MaximizeRequest, job: engine.Job, settings: Settings) -> Maximization:
    """How to stream the run of `job`: preview interval and size."""
    steps = job.recipe.steps
    preview_every = request.preview_every or max(1, steps // 10)
    _check_range("preview_every", preview_every, 1, steps, "0 (about ten previews) or ")
    if request.preview_size:
        _check_range(
            "preview_size",
            request.preview_size,
            MIN_PREVIEW_SIZE,
            settings.max_size,
            "0 (full size) or ",
        )
    return Maximization(job, preview_every, request.preview_size, not request.no_preview_images)


def _images_per_channel(request: pb.MaximizeRequest, most: int) -> int:
    """The images per channel (per objective, with an expression) asked for: 0 means one."""
    images = request.images_per_channel or 1
    return _check_range("images_per_channel", images, 1, most, "0 (one) or ")


def _seed(request: pb.MaximizeRequest, images_per_channel: int) -> int:
    """The first seed; the images of a channel take it and the next ones."""
    return _check_range("seed", request.seed, 0, UINT64_MAX - images_per_channel + 1)


def _expression_maximization(request: pb.MaximizeRequest, settings: Settings) -> Maximization:
    """A request for images that maximize an objective expression (or interpolate)."""
    for name, given in (
        ("layer", bool(request.layer)),
        ("channels", bool(request.channels)),
        ("objective", request.HasField("objective")),
    ):
        if given:
            raise InvalidArgument(name, "must be empty with an objective expression")
    most = min(settings.max_images_per_channel, settings.max_images)
    images = _images_per_channel(request, most)
    recipe = _recipe(request, settings)
    job = engine.Job(
        layer="",
        channels=(),
        recipe=recipe,
        seed=_seed(request, images),
        init=_init_image(request, recipe.size),
        images_per_channel=images,
        expression=_expression("expression", request.expression),
        interpolate_to=(
            _expression("interpolate_to", request.interpolate_to)
            if request.HasField("interpolate_to")
            else None
        ),
    )
    with _field_errors():
        engine.validate(job)  # the engine's rules: layers, channels, vectors, weights
    # The preset's steps for the deepest layer read, now that the layers are known to exist.
    job = dataclasses.replace(job, recipe=_recipe(request, settings, job.cut_layer))
    return _plan(request, job, settings)


def _init_image(request: pb.MaximizeRequest, size: int) -> engine.InitImage | None:
    """The picture to start from, decoded and fitted to the image size: scaled so that its
    shorter side is `size` (Lanczos), then centre-cropped."""
    if not request.HasField("init_image"):
        return None
    init = request.init_image
    keep_close = _check_float("init_image.keep_close", init.keep_close, *KEEP_CLOSE)
    data = init.data
    if not data:
        raise InvalidArgument(
            "init_image.data", "is empty; give a PNG or JPEG picture (keep_close needs one)"
        )
    if len(data) > MAX_INIT_IMAGE_BYTES:
        raise InvalidArgument(
            "init_image.data", f"{len(data)} bytes; at most {MAX_INIT_IMAGE_BYTES} bytes"
        )
    try:
        picture = PILImage.open(io.BytesIO(data))
    except PILImage.UnidentifiedImageError:  # its message names a Python object, not the data
        raise InvalidArgument("init_image.data", "is not a PNG or JPEG picture") from None
    except (OSError, SyntaxError, ValueError, PILImage.DecompressionBombError) as error:
        raise InvalidArgument(
            "init_image.data", f"is not a PNG or JPEG picture ({error})"
        ) from None
    with picture:
        if picture.format not in ("PNG", "JPEG"):
            raise InvalidArgument("init_image.data", f"is {picture.format}; give a PNG or JPEG")
        if max(picture.size) > MAX_INIT_IMAGE_SIDE:
            raise InvalidArgument(
                "init_image.data",
                f"is {picture.width}x{picture.height} px; at most {MAX_INIT_IMAGE_SIDE} a side",
            )
        try:
            rgb = picture.convert("RGB")  # decodes: a truncated file fails here
        except (OSError, SyntaxError, ValueError) as error:
            raise InvalidArgument("init_image.data", f"cannot be decoded ({error})") from None
    fitted = ImageOps.fit(rgb, (size, size), PILImage.Resampling.LANCZOS)
    return engine.InitImage(np.asarray(fitted, dtype=np.uint8).tobytes(), keep_close)


def _expression(field: str, expression: pb.ObjectiveExpression) -> engine.Expression:
    """The wire expression as the engine's, each term's fields fitting its kind."""
    terms = []
    for i, term in enumerate(expression.terms):
        at = f"{field}.terms[{i}]"
        kind = _word(f"{at}.kind", pb.TermKind, term.kind, get_args(TermKind))
        has_x, has_y = term.HasField("neuron_x"), term.HasField("neuron_y")
        if (has_x or has_y) and kind != "neuron":
            given = "neuron_x" if has_x else "neuron_y"
            raise InvalidArgument(f"{at}.{given}", "only for TERM_KIND_NEURON")
        if has_x != has_y:
            missing = "neuron_y" if has_x else "neuron_x"
            raise InvalidArgument(f"{at}.{missing}", "give neuron_x and neuron_y, or neither")
        if term.channel and kind not in ("channel", "neuron"):
            raise InvalidArgument(f"{at}.channel", "only for TERM_KIND_CHANNEL and _NEURON")
        if term.vector and kind != "direction":
            raise InvalidArgument(f"{at}.vector", "only for TERM_KIND_DIRECTION")
        engine_term = engine.Term(
            kind,
            term.layer,
            term.channel,
            (term.neuron_x, term.neuron_y) if has_x else None,
            tuple(term.vector),
        )
        terms.append((term.weight if term.HasField("weight") else 1.0, engine_term))
    return engine.Expression(tuple(terms))


def _channel_indices(requested: Any, layer: Layer, settings: Settings) -> tuple[int, ...]:
    """The requested channels of `layer`: at least one, at most the server's limit, each once
    (whether each is one of the layer's is the domain's rule: `check_channels`)."""
    channels = tuple(requested)
    if not channels:
        raise InvalidArgument(
            "channels", f"give at least one channel of {layer.name} (0..{layer.channels - 1})"
        )
    _check_range("channels", len(channels), 1, settings.max_channels, what="channel count ")
    if len(set(channels)) != len(channels):
        duplicate = next(c for c in channels if channels.count(c) > 1)
        raise InvalidArgument("channels", f"channel {duplicate} is listed twice")
    return channels


def limits(settings: Settings) -> schema.Limits:
    """The server limits that bound recipe fields (schema bounds name them)."""
    return {name: getattr(settings, name) for name in schema.LIMIT_NAMES}


def _recipe(
    request: pb.MaximizeRequest, settings: Settings, layer: str | None = None
) -> engine.Recipe:
    """The preset with the request's overrides, checked by the schema against the limits;
    `layer`, the deepest layer the objective reads, sets the preset's steps (engine.recipe)."""
    preset = engine.DEFAULT_PRESET
    if request.preset:
        preset = _word("preset", pb.Preset, request.preset, engine.PRESETS)
    overrides = _overrides(request)
    try:
        return engine.recipe(preset, limits(settings), layer=layer, **overrides)
    except schema.OptionError as error:  # named by the field the request gave, if it gave one
        named = [schema.BY_NAME[name] for name in (error.field, *error.involves)]
        given = [f for f in named if f.spec.request and f.name.partition(".")[0] in overrides]
        if given and given[0] is named[0]:
            raise InvalidArgument(named[0].spec.request, error.description) from None
        hint = f"the {preset} preset's {named[0].name} is not allowed here; "
        field = given[0].spec.request if given else "preset"
        raise InvalidArgument(field, hint + error.description) from None


def _overrides(request: pb.MaximizeRequest) -> dict[str, Any]:
    """Recipe field -> value for every recipe field the request sets (schema.FIELDS says where
    each is set; a field with presence counts when present, any other when not zero)."""
    overrides: dict[str, Any] = {}
    for field in schema.FIELDS:
        if not field.spec.request or field.name.startswith("transforms."):
            continue
        *parents, name = field.spec.request.split(".")
        message = request
        for parent in parents:
            message = getattr(message, parent)
        descriptor = message.DESCRIPTOR.fields_by_name[name]
        given = message.HasField(name) if descriptor.has_presence else bool(getattr(message, name))
        if not given:
            continue
        if field.type == "choice":
            enum = EnumTypeWrapper(descriptor.enum_type)
            overrides[field.name] = _word(
                field.spec.request, enum, getattr(message, name), field.choices
            )
        else:
            overrides[field.name] = getattr(message, name)
    if request.options.HasField("transforms"):
        overrides["transforms"] = _transforms(request.options.transforms)
    return overrides


def _transforms(transforms: pb.Transforms) -> engine.Transforms | None:
    """The request's augmentations (a scale of 0 means none); the identity means none at all."""
    values = {
        name: getattr(transforms, name) or getattr(schema.IDENTITY_TRANSFORMS, name)
        for name in pb.Transforms.DESCRIPTOR.fields_by_name
    }
    result = engine.Transforms(**values)
    return None if result == schema.IDENTITY_TRANSFORMS else result


def _objective(objective: pb.Objective, layer: Layer, size: int) -> engine.Objective:
    """The objective's fields, each fitting its kind; a neuron's missing coordinate is the
    centre's (engine.validate checks that the position lies in the layer)."""
    kind = "channel"
    if objective.kind:
        kind = _word("objective.kind", pb.ObjectiveKind, objective.kind, get_args(ObjectiveKind))
    diversity = _check_float("objective.diversity", objective.diversity, *DIVERSITY)
    has_position = objective.HasField("neuron_x") or objective.HasField("neuron_y")
    if has_position and kind != "neuron":
        name = "objective.neuron_x" if objective.HasField("neuron_x") else "objective.neuron_y"
        raise InvalidArgument(name, "only allowed with objective.kind OBJECTIVE_KIND_NEURON")
    neuron = None
    if has_position:
        x, y = layer_geometry(layer.name, size).centre
        neuron = (
            objective.neuron_x if objective.HasField("neuron_x") else x,
            objective.neuron_y if objective.HasField("neuron_y") else y,
        )
    return engine.Objective(kind, neuron, objective.negate, diversity)


# --- checks -------------------------------------------------------------------------------------


@contextmanager
def _field_errors() -> Iterator[None]:
    """A domain rule's ValueError ("field: description") as an InvalidArgument."""
    try:
        yield
    except InvalidArgument:
        raise
    except ValueError as error:
        field, _, description = str(error).partition(": ")
        raise InvalidArgument(field, description) from None


def _check_range(
    field: str, value: int, low: int, high: int, allowed: str = "", what: str = ""
) -> int:
    """`value` itself, or InvalidArgument naming the field and the allowed range."""
    if not low <= value <= high:
        raise InvalidArgument(
            field, f"{what}{value} is out of range; allowed: {allowed}{low}..{high}"
        )
    return value


def _check_float(field: str, value: float, low: float, high: float, allowed: str = "") -> float:
    if not (math.isfinite(value) and low <= value <= high):
        raise InvalidArgument(field, f"{value} is out of range; allowed: {allowed}{low}..{high}")
    return value


def _word(field: str, enum: EnumTypeWrapper, number: int, allowed: Collection[str]) -> str:
    """The engine's word for a proto enum value (PRESET_LUCID: "lucid"), one of `allowed`; any
    other value, UNSPECIFIED included, is refused naming the field."""
    known = {n: word for n, word in enums.words(enum).items() if word in allowed}
    if number not in known:
        names = ", ".join(f"{enum.Name(n)} ({n})" for n in known)
        raise InvalidArgument(field, f"unknown value {number}; allowed: {names}")
    return known[number]


def reject_unknown_fields(message: Message, path: str = "") -> None:
    """Fields this server does not know (a newer client's) would be silently ignored: refuse."""
    for unknown in UnknownFieldSet(message):
        where = path or message.DESCRIPTOR.name
        raise InvalidArgument(
            where,
            f"unknown field number {unknown.field_number} in {message.DESCRIPTOR.full_name} "
            "(is the client's featviz.proto newer than the server's?)",
        )
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None:
            continue
        where = f"{path}.{descriptor.name}" if path else descriptor.name
        if descriptor.is_repeated:
            for i, item in enumerate(value):
                reject_unknown_fields(item, f"{where}[{i}]")
        else:
            reject_unknown_fields(value, where)
