"""Maximize options: one table that checks keyword arguments, builds the request, and makes the
CLI flags, so that the SDK's keywords and the CLI's flags cannot drift apart.

Values are only type-checked here; their ranges are the server's business (it knows its limits
and answers INVALID_ARGUMENT naming the field). The server describes every recipe field, its
range and each preset's value (`Client.describe_model().recipe_fields`, `featviz describe
--options`). An option that sets a request field as it is takes its help from the contract
(`featviz.contract`), as the server's description does.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypedDict

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper
from google.protobuf.message import Message

from featviz import enums
from featviz.contract import field_help
from featviz.objectives import Objective
from featviz.v1 import featviz_pb2

ChannelsLike = int | str | Iterable[int]

# Each augmentation's Python type, from the contract; one left unnamed is 0, which means off.
TRANSFORM_TYPES: dict[str, type] = {
    field.name: {FieldDescriptor.TYPE_BOOL: bool, FieldDescriptor.TYPE_FLOAT: float}.get(
        field.type, int
    )
    for field in featviz_pb2.Transforms.DESCRIPTOR.fields
}


@dataclass(frozen=True)
class Option:
    """One keyword of `maximize`: its Python type, where it goes in the request, its help, and
    how the CLI reads it from text (`parse`, default: the type itself)."""

    type: type
    path: str
    help: str
    enum: EnumTypeWrapper | None = None
    parse: Callable[[str], Any] | None = None

    @property
    def choices(self) -> tuple[str, ...]:
        """The words an enum option accepts, e.g. ("classic", "lucid", "fast")."""
        return () if self.enum is None else enums.names(self.enum)


def parse_pair(text: str) -> tuple[int, int]:
    """(x, y) from text "X,Y", e.g. a neuron position."""
    match = re.fullmatch(r"\s*(\d+)\s*,\s*(\d+)\s*", text)
    if not match:
        raise ValueError(f"{text!r} is not X,Y (two integers >= 0)")
    return int(match[1]), int(match[2])


def parse_transforms(text: str) -> dict[str, float] | Literal[False]:
    """False for "none", else the mapping of "pad=4,jitter=8,scale_min=0.9"."""
    if text.strip().lower() == "none":
        return False
    transforms: dict[str, float] = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        key = key.strip()
        if TRANSFORM_TYPES.get(key) is bool:  # reflect=yes / no
            transforms[key] = parse_bool(value)
            continue
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{item.strip()!r} is not KEY=NUMBER") from None
        transforms[key] = int(number) if re.fullmatch(r"\s*-?\d+\s*", value) else number
    return transforms


def parse_bool(text: str) -> bool:
    """True for yes/true/on/1, False for no/false/off/0."""
    word = text.strip().lower()
    if word in ("yes", "true", "on", "1"):
        return True
    if word in ("no", "false", "off", "0"):
        return False
    raise ValueError(f"{text.strip()!r} is not one of yes, no, true, false, on, off, 1, 0")


def _described(type: type, path: str, enum: EnumTypeWrapper | None = None) -> Option:
    """The option that sets request field `path`, with the contract's help for it."""
    return Option(type, path, field_help(featviz_pb2.MaximizeRequest.DESCRIPTOR, path), enum)


OPTIONS: dict[str, Option] = {
    "size": _described(int, "size"),
    "steps": _described(int, "steps"),
    "preset": _described(str, "preset", featviz_pb2.Preset),
    "seed": _described(int, "seed"),
    "objective": Option(
        str,
        "objective.kind",
        "maximize a channel's mean or one neuron (the SDK also takes an objective expression, "
        "featviz.channel(...) - ..., instead of a layer and channels)",
        featviz_pb2.ObjectiveKind,
    ),
    "init": Option(
        bytes,
        "init_image.data",
        "start from this picture (a PNG or JPEG file, or its bytes), fitted to the size",
        parse=str,
    ),
    "keep_close": Option(
        float,
        "init_image.keep_close",
        "with --init: weight of the distance to the picture that keeps the result close to it",
    ),
    "interpolate_to": Option(
        Objective,
        "interpolate_to",
        "with an objective expression: the images move from it to this one, sharing a layout",
    ),
    "neuron": Option(
        tuple, "objective.neuron", "neuron position X,Y in the layer's output", parse=parse_pair
    ),
    "negate": _described(bool, "objective.negate"),
    "diversity": _described(float, "objective.diversity"),
    "images_per_channel": _described(int, "images_per_channel"),
    "preview_every": _described(int, "preview_every"),
    "preview_size": _described(int, "preview_size"),
    "preview_images": Option(bool, "no_preview_images", "send preview images with progress"),
    "parameterization": _described(str, "options.parameterization", featviz_pb2.Parameterization),
    "decorrelate": _described(bool, "options.decorrelate"),
    "optimizer": _described(str, "options.optimizer", featviz_pb2.Optimizer),
    "learning_rate": _described(float, "options.learning_rate"),
    "transforms": Option(
        Mapping,
        "options.transforms",
        f"augmentations: 'none', or KEY=VALUE,... of {', '.join(TRANSFORM_TYPES)} (the others off)",
        parse=parse_transforms,
    ),
    "l1": _described(float, "options.l1"),
    "l2": _described(float, "options.l2"),
    "total_variation": _described(float, "options.total_variation"),
    "blur_every": _described(int, "options.blur_every"),
    "blur_sigma": _described(float, "options.blur_sigma"),
    "redirect_relu_steps": _described(int, "options.redirect_relu_steps"),
}


class MaximizeOptions(TypedDict, total=False):
    """The keyword arguments of `Client.maximize` (see OPTIONS for what each does)."""

    size: int
    steps: int
    preset: Literal["classic", "lucid", "fast"]
    seed: int
    objective: Literal["channel", "neuron"] | Objective
    interpolate_to: Objective
    init: str | os.PathLike[str] | bytes
    keep_close: float
    neuron: tuple[int, int]
    negate: bool
    diversity: float
    images_per_channel: int
    preview_every: int
    preview_size: int
    preview_images: bool
    parameterization: Literal["pixel", "fourier"]
    decorrelate: bool
    optimizer: Literal["adam", "normalized_ascent"]
    learning_rate: float
    transforms: Mapping[str, float] | Literal[False]
    l1: float
    l2: float
    total_variation: float
    blur_every: int
    blur_sigma: float
    redirect_relu_steps: int


def flag(name: str) -> str:
    """The CLI flag of keyword `name`, e.g. "--images-per-channel"."""
    return "--" + name.replace("_", "-")


def check_keywords(given: Iterable[str], allowed: Collection[str], where: str) -> None:
    """Raise TypeError for an unknown keyword, suggesting the closest known one."""
    for name in given:
        if name not in allowed:
            hint = suggestion(name, allowed)
            raise TypeError(f"{where} got an unexpected keyword argument {name!r}{hint}")


def suggestion(name: str, known: Collection[str]) -> str:
    """The hint for a near miss ("; did you mean 'steps'?" for "stpes"), else ""."""
    close = difflib.get_close_matches(name, known, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def parse_channels(text: str) -> list[int]:
    """Channel indices from text such as ``"14"``, ``"0-63"`` or ``"3,7,9-11"``.

    >>> parse_channels("3,7,9-11")
    [3, 7, 9, 10, 11]
    """
    channels: list[int] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match:
            raise ValueError(f"channels: {part.strip()!r} is not N or N-M (e.g. 14, 0-63, 3,7,9)")
        first, last = int(match[1]), int(match[2] or match[1])
        if last < first:
            raise ValueError(f"channels: range {first}-{last} is backwards")
        channels += range(first, last + 1)
    return channels


def channel_list(channels: ChannelsLike) -> list[int]:
    """Normalize `channels` (an index, a list of them, or text like "0-63") to a list."""
    if isinstance(channels, str):
        return parse_channels(channels)
    values = [channels] if isinstance(channels, int) else list(channels)
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"channels must be integers, got {value!r}")
        if value < 0:
            raise ValueError(f"channels must be >= 0, got {value}")
    if not values:
        raise ValueError("channels must name at least one channel")
    return values


def maximize_request(
    layer: str | None, channels: ChannelsLike | None, options: Mapping[str, Any]
) -> featviz_pb2.MaximizeRequest:
    """The MaximizeRequest for `Client.maximize(layer, channels, **options)`, or for
    `Client.maximize(objective=expression, **options)`.

    None means "not given" (the preset decides), so callers can pass optional values through.
    """
    check_keywords(options, OPTIONS, "maximize()")
    expression = options.get("objective")
    if isinstance(expression, Objective):
        if layer is not None or channels is not None:
            raise TypeError("maximize() takes a layer and channels, or objective=..., not both")
        options = {name: value for name, value in options.items() if name != "objective"}
        for name, value in options.items():
            if value is not None and OPTIONS[name].path.startswith("objective."):
                raise TypeError(
                    f"{name} is for a layer and channels; with an objective expression, "
                    "write it in the expression (-(...), LAYER:diversity, LAYER:C@X,Y)"
                )
        request = featviz_pb2.MaximizeRequest(expression=expression.to_proto())
    else:
        if not isinstance(layer, str):
            raise TypeError(
                "maximize() needs a layer name such as 'block5_conv2' and channels, or "
                f"objective=featviz.channel(...) ...; got layer {layer!r}"
            )
        if channels is None:
            raise TypeError(f"maximize() needs the channels of {layer} (e.g. 14, [3, 7], '0-63')")
        request = featviz_pb2.MaximizeRequest(layer=layer, channels=channel_list(channels))
    for name, value in options.items():
        if value is not None:
            _apply(request, name, OPTIONS[name], value)
    if options.get("neuron") is not None and options.get("objective") is None:
        request.objective.kind = featviz_pb2.OBJECTIVE_KIND_NEURON
    return request


def _apply(request: featviz_pb2.MaximizeRequest, name: str, option: Option, value: Any) -> None:
    *parents, field = option.path.split(".")
    message: Message = request
    for parent in parents:
        message = getattr(message, parent)
    if name == "neuron":
        message.neuron_x, message.neuron_y = _neuron(value)  # type: ignore[attr-defined]
    elif name == "init":
        message.data = _picture(value)  # type: ignore[attr-defined]
    elif option.type is Objective:
        if not isinstance(value, Objective):
            raise TypeError(
                f"{name} must be an objective such as featviz.channel(...), got {value!r}"
            )
        getattr(message, field).CopyFrom(value.to_proto())
    elif name == "transforms":
        message.transforms.CopyFrom(_transforms(value))  # type: ignore[attr-defined]
    elif name == "preview_images":
        request.no_preview_images = not _checked(name, bool, value)
    elif option.enum is not None:
        setattr(message, field, _enum_value(name, option, value))
    else:
        value = _checked(name, option.type, value)
        try:
            setattr(message, field, value)
        except ValueError:
            raise ValueError(f"{name} is out of range: {value!r}") from None


def _picture(value: Any) -> bytes:
    """The bytes of a picture given as bytes or as a file path."""
    if isinstance(value, bytes):
        return value
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"init must be a file path or bytes, got {value!r}")
    try:
        return Path(value).read_bytes()
    except OSError as error:
        raise ValueError(f"init: cannot read {value}: {error.strerror or error}") from None


def _checked(name: str, expected: type, value: Any) -> Any:
    """`value` if it is of the expected type (ints pass as floats; bools never pass as numbers)."""
    accepted = (int, float) if expected is float else expected
    if (isinstance(value, bool) and expected is not bool) or not isinstance(value, accepted):
        raise TypeError(f"{name} must be {expected.__name__}, got {value!r}")
    return value


def _enum_value(name: str, option: Option, value: Any) -> int:
    if not isinstance(value, str) or value.lower() not in option.choices:
        raise ValueError(f"{name} must be one of {', '.join(option.choices)}; got {value!r}")
    assert option.enum is not None
    return enums.value(option.enum, value)


def _neuron(value: Any) -> tuple[int, int]:
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
    ):
        raise ValueError(f"neuron must be (x, y) with two integers >= 0, got {value!r}")
    return value[0], value[1]


def _transforms(value: Any) -> featviz_pb2.Transforms:
    """False means none; a mapping names the augmentations wanted, the rest are off."""
    if value is False:
        value = {}
    if not isinstance(value, Mapping):
        raise TypeError(f"transforms must be a mapping or False, got {value!r}")
    check_keywords(value, TRANSFORM_TYPES, "transforms")
    for key, given in value.items():
        _checked(f"transforms[{key!r}]", TRANSFORM_TYPES[key], given)
    try:
        return featviz_pb2.Transforms(**value)
    except ValueError:
        raise ValueError(f"transforms out of range: {value!r}") from None
