"""The model description as plain dataclasses, mirroring DescribeModelResponse field for field
(so `dataclasses.asdict` gives the JSON the CLI prints)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from featviz import enums
from featviz.v1 import featviz_pb2


@dataclass(frozen=True)
class LayerInfo:
    """One layer, in forward order; `kind` is "conv" or "pool"."""

    name: str
    kind: str
    channels: int
    parameters: int
    output_height: int
    output_width: int
    receptive_field: int
    stride: int

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of the layer's output."""
        return self.output_height, self.output_width, self.channels


@dataclass(frozen=True)
class WeightsInfo:
    """Where the weights came from (`source`) and their checksum (`sha256`)."""

    source: str
    sha256: str


@dataclass(frozen=True)
class InputSpec:
    """The network's public input contract (RGB, NCHW, values in [0, 1])."""

    channel_order: str
    layout: str
    value_min: float
    value_max: float
    preprocessing: str
    min_size: int
    max_size: int


@dataclass(frozen=True)
class RecipeField:
    """One field of the optimization recipe: `type` is "int", "float", "bool" or "choice";
    `request_field` the request field (and SDK option path) that overrides it, "" if none."""

    name: str
    help: str
    type: str
    minimum: float
    maximum: float
    choices: tuple[str, ...]
    request_field: str
    constraint: str


@dataclass(frozen=True)
class PresetInfo:
    """A preset and its full recipe: the value of every recipe field by name."""

    name: str
    description: str
    values: dict[str, float | bool | str]


@dataclass(frozen=True)
class RequestLimits:
    """The server's limits on one request."""

    max_channels: int
    max_images_per_channel: int
    max_images: int
    max_init_image_bytes: int


@dataclass(frozen=True)
class ModelDescription:
    """What `describe_model` returns: the network, its weights and every layer's geometry.

    Example::

        description = client.describe_model(input_size=128)
        print(description.total_parameters, description.layer("block5_conv2").output_shape)
    """

    model_name: str
    weights: WeightsInfo
    input: InputSpec
    total_parameters: int
    input_size: int
    layers: tuple[LayerInfo, ...]
    device: str
    recipe_fields: tuple[RecipeField, ...] = ()
    presets: tuple[PresetInfo, ...] = ()
    default_preset: str = ""
    limits: RequestLimits | None = None

    @classmethod
    def from_proto(cls, response: featviz_pb2.DescribeModelResponse) -> ModelDescription:
        return cls(
            model_name=response.model_name,
            weights=_copy(WeightsInfo, response.weights),
            input=_copy(InputSpec, response.input),
            total_parameters=response.total_parameters,
            input_size=response.input_size,
            layers=tuple(
                _copy(LayerInfo, layer, kind=enums.name(featviz_pb2.LayerKind, layer.kind))
                for layer in response.layers
            ),
            device=response.device,
            recipe_fields=tuple(
                _copy(
                    RecipeField,
                    field,
                    type=enums.name(featviz_pb2.RecipeFieldType, field.type),
                    choices=tuple(field.choices),
                )
                for field in response.recipe_fields
            ),
            presets=tuple(
                PresetInfo(
                    preset.name,
                    preset.description,
                    {v.name: getattr(v, v.WhichOneof("value")) for v in preset.values},
                )
                for preset in response.presets
            ),
            default_preset=enums.name(featviz_pb2.Preset, response.default_preset),
            limits=_copy(RequestLimits, response.limits) if response.HasField("limits") else None,
        )

    def layer(self, name: str) -> LayerInfo:
        """The layer called `name` (a ValueError listing the names if there is none)."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(
            f"unknown layer {name!r}; layers: {', '.join(x.name for x in self.layers)}"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of everything."""
        return dataclasses.asdict(self)


def _copy(cls: type, message: Any, **overrides: Any) -> Any:
    """An instance of dataclass `cls` from the same-named fields of a proto message."""
    values = {field.name: getattr(message, field.name) for field in dataclasses.fields(cls)}
    return cls(**{**values, **overrides})
