from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LayerKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LAYER_KIND_UNSPECIFIED: _ClassVar[LayerKind]
    LAYER_KIND_CONV: _ClassVar[LayerKind]
    LAYER_KIND_POOL: _ClassVar[LayerKind]

class RecipeFieldType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RECIPE_FIELD_TYPE_UNSPECIFIED: _ClassVar[RecipeFieldType]
    RECIPE_FIELD_TYPE_INT: _ClassVar[RecipeFieldType]
    RECIPE_FIELD_TYPE_FLOAT: _ClassVar[RecipeFieldType]
    RECIPE_FIELD_TYPE_BOOL: _ClassVar[RecipeFieldType]
    RECIPE_FIELD_TYPE_CHOICE: _ClassVar[RecipeFieldType]

class Preset(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRESET_UNSPECIFIED: _ClassVar[Preset]
    PRESET_CLASSIC: _ClassVar[Preset]
    PRESET_LUCID: _ClassVar[Preset]
    PRESET_FAST: _ClassVar[Preset]

class ObjectiveKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OBJECTIVE_KIND_UNSPECIFIED: _ClassVar[ObjectiveKind]
    OBJECTIVE_KIND_CHANNEL: _ClassVar[ObjectiveKind]
    OBJECTIVE_KIND_NEURON: _ClassVar[ObjectiveKind]

class Parameterization(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PARAMETERIZATION_UNSPECIFIED: _ClassVar[Parameterization]
    PARAMETERIZATION_PIXEL: _ClassVar[Parameterization]
    PARAMETERIZATION_FOURIER: _ClassVar[Parameterization]

class Optimizer(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OPTIMIZER_UNSPECIFIED: _ClassVar[Optimizer]
    OPTIMIZER_ADAM: _ClassVar[Optimizer]
    OPTIMIZER_NORMALIZED_ASCENT: _ClassVar[Optimizer]

class TermKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TERM_KIND_UNSPECIFIED: _ClassVar[TermKind]
    TERM_KIND_CHANNEL: _ClassVar[TermKind]
    TERM_KIND_NEURON: _ClassVar[TermKind]
    TERM_KIND_DIRECTION: _ClassVar[TermKind]
    TERM_KIND_L1: _ClassVar[TermKind]
    TERM_KIND_L2: _ClassVar[TermKind]
    TERM_KIND_TOTAL_VARIATION: _ClassVar[TermKind]
    TERM_KIND_DIVERSITY: _ClassVar[TermKind]

class StopReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STOP_REASON_UNSPECIFIED: _ClassVar[StopReason]
    STOP_REASON_STEP_LIMIT: _ClassVar[StopReason]
    STOP_REASON_CONVERGED: _ClassVar[StopReason]
LAYER_KIND_UNSPECIFIED: LayerKind
LAYER_KIND_CONV: LayerKind
LAYER_KIND_POOL: LayerKind
RECIPE_FIELD_TYPE_UNSPECIFIED: RecipeFieldType
RECIPE_FIELD_TYPE_INT: RecipeFieldType
RECIPE_FIELD_TYPE_FLOAT: RecipeFieldType
RECIPE_FIELD_TYPE_BOOL: RecipeFieldType
RECIPE_FIELD_TYPE_CHOICE: RecipeFieldType
PRESET_UNSPECIFIED: Preset
PRESET_CLASSIC: Preset
PRESET_LUCID: Preset
PRESET_FAST: Preset
OBJECTIVE_KIND_UNSPECIFIED: ObjectiveKind
OBJECTIVE_KIND_CHANNEL: ObjectiveKind
OBJECTIVE_KIND_NEURON: ObjectiveKind
PARAMETERIZATION_UNSPECIFIED: Parameterization
PARAMETERIZATION_PIXEL: Parameterization
PARAMETERIZATION_FOURIER: Parameterization
OPTIMIZER_UNSPECIFIED: Optimizer
OPTIMIZER_ADAM: Optimizer
OPTIMIZER_NORMALIZED_ASCENT: Optimizer
TERM_KIND_UNSPECIFIED: TermKind
TERM_KIND_CHANNEL: TermKind
TERM_KIND_NEURON: TermKind
TERM_KIND_DIRECTION: TermKind
TERM_KIND_L1: TermKind
TERM_KIND_L2: TermKind
TERM_KIND_TOTAL_VARIATION: TermKind
TERM_KIND_DIVERSITY: TermKind
STOP_REASON_UNSPECIFIED: StopReason
STOP_REASON_STEP_LIMIT: StopReason
STOP_REASON_CONVERGED: StopReason

class DescribeModelRequest(_message.Message):
    __slots__ = ("input_size",)
    INPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    input_size: int
    def __init__(self, input_size: _Optional[int] = ...) -> None: ...

class LayerInfo(_message.Message):
    __slots__ = ("name", "kind", "channels", "parameters", "output_height", "output_width", "receptive_field", "stride")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_WIDTH_FIELD_NUMBER: _ClassVar[int]
    RECEPTIVE_FIELD_FIELD_NUMBER: _ClassVar[int]
    STRIDE_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: LayerKind
    channels: int
    parameters: int
    output_height: int
    output_width: int
    receptive_field: int
    stride: int
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[LayerKind, str]] = ..., channels: _Optional[int] = ..., parameters: _Optional[int] = ..., output_height: _Optional[int] = ..., output_width: _Optional[int] = ..., receptive_field: _Optional[int] = ..., stride: _Optional[int] = ...) -> None: ...

class WeightsInfo(_message.Message):
    __slots__ = ("source", "sha256")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    source: str
    sha256: str
    def __init__(self, source: _Optional[str] = ..., sha256: _Optional[str] = ...) -> None: ...

class InputSpec(_message.Message):
    __slots__ = ("channel_order", "layout", "value_min", "value_max", "preprocessing", "min_size", "max_size")
    CHANNEL_ORDER_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    VALUE_MIN_FIELD_NUMBER: _ClassVar[int]
    VALUE_MAX_FIELD_NUMBER: _ClassVar[int]
    PREPROCESSING_FIELD_NUMBER: _ClassVar[int]
    MIN_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_SIZE_FIELD_NUMBER: _ClassVar[int]
    channel_order: str
    layout: str
    value_min: float
    value_max: float
    preprocessing: str
    min_size: int
    max_size: int
    def __init__(self, channel_order: _Optional[str] = ..., layout: _Optional[str] = ..., value_min: _Optional[float] = ..., value_max: _Optional[float] = ..., preprocessing: _Optional[str] = ..., min_size: _Optional[int] = ..., max_size: _Optional[int] = ...) -> None: ...

class DescribeModelResponse(_message.Message):
    __slots__ = ("model_name", "weights", "input", "total_parameters", "input_size", "layers", "device", "recipe_fields", "presets", "default_preset", "limits")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    INPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    RECIPE_FIELDS_FIELD_NUMBER: _ClassVar[int]
    PRESETS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_PRESET_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    weights: WeightsInfo
    input: InputSpec
    total_parameters: int
    input_size: int
    layers: _containers.RepeatedCompositeFieldContainer[LayerInfo]
    device: str
    recipe_fields: _containers.RepeatedCompositeFieldContainer[RecipeField]
    presets: _containers.RepeatedCompositeFieldContainer[PresetInfo]
    default_preset: Preset
    limits: RequestLimits
    def __init__(self, model_name: _Optional[str] = ..., weights: _Optional[_Union[WeightsInfo, _Mapping]] = ..., input: _Optional[_Union[InputSpec, _Mapping]] = ..., total_parameters: _Optional[int] = ..., input_size: _Optional[int] = ..., layers: _Optional[_Iterable[_Union[LayerInfo, _Mapping]]] = ..., device: _Optional[str] = ..., recipe_fields: _Optional[_Iterable[_Union[RecipeField, _Mapping]]] = ..., presets: _Optional[_Iterable[_Union[PresetInfo, _Mapping]]] = ..., default_preset: _Optional[_Union[Preset, str]] = ..., limits: _Optional[_Union[RequestLimits, _Mapping]] = ...) -> None: ...

class RecipeField(_message.Message):
    __slots__ = ("name", "help", "type", "minimum", "maximum", "choices", "request_field", "constraint")
    NAME_FIELD_NUMBER: _ClassVar[int]
    HELP_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MINIMUM_FIELD_NUMBER: _ClassVar[int]
    MAXIMUM_FIELD_NUMBER: _ClassVar[int]
    CHOICES_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINT_FIELD_NUMBER: _ClassVar[int]
    name: str
    help: str
    type: RecipeFieldType
    minimum: float
    maximum: float
    choices: _containers.RepeatedScalarFieldContainer[str]
    request_field: str
    constraint: str
    def __init__(self, name: _Optional[str] = ..., help: _Optional[str] = ..., type: _Optional[_Union[RecipeFieldType, str]] = ..., minimum: _Optional[float] = ..., maximum: _Optional[float] = ..., choices: _Optional[_Iterable[str]] = ..., request_field: _Optional[str] = ..., constraint: _Optional[str] = ...) -> None: ...

class RecipeValue(_message.Message):
    __slots__ = ("name", "number", "flag", "choice")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    FLAG_FIELD_NUMBER: _ClassVar[int]
    CHOICE_FIELD_NUMBER: _ClassVar[int]
    name: str
    number: float
    flag: bool
    choice: str
    def __init__(self, name: _Optional[str] = ..., number: _Optional[float] = ..., flag: _Optional[bool] = ..., choice: _Optional[str] = ...) -> None: ...

class PresetInfo(_message.Message):
    __slots__ = ("preset", "name", "description", "values")
    PRESET_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    preset: Preset
    name: str
    description: str
    values: _containers.RepeatedCompositeFieldContainer[RecipeValue]
    def __init__(self, preset: _Optional[_Union[Preset, str]] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., values: _Optional[_Iterable[_Union[RecipeValue, _Mapping]]] = ...) -> None: ...

class RequestLimits(_message.Message):
    __slots__ = ("max_channels", "max_images_per_channel", "max_images", "max_init_image_bytes")
    MAX_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGES_PER_CHANNEL_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGES_FIELD_NUMBER: _ClassVar[int]
    MAX_INIT_IMAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    max_channels: int
    max_images_per_channel: int
    max_images: int
    max_init_image_bytes: int
    def __init__(self, max_channels: _Optional[int] = ..., max_images_per_channel: _Optional[int] = ..., max_images: _Optional[int] = ..., max_init_image_bytes: _Optional[int] = ...) -> None: ...

class Objective(_message.Message):
    __slots__ = ("kind", "neuron_x", "neuron_y", "negate", "diversity")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NEURON_X_FIELD_NUMBER: _ClassVar[int]
    NEURON_Y_FIELD_NUMBER: _ClassVar[int]
    NEGATE_FIELD_NUMBER: _ClassVar[int]
    DIVERSITY_FIELD_NUMBER: _ClassVar[int]
    kind: ObjectiveKind
    neuron_x: int
    neuron_y: int
    negate: bool
    diversity: float
    def __init__(self, kind: _Optional[_Union[ObjectiveKind, str]] = ..., neuron_x: _Optional[int] = ..., neuron_y: _Optional[int] = ..., negate: _Optional[bool] = ..., diversity: _Optional[float] = ...) -> None: ...

class Transforms(_message.Message):
    __slots__ = ("pad", "jitter", "scale_min", "scale_max", "rotate_degrees", "final_jitter", "reflect", "blur")
    PAD_FIELD_NUMBER: _ClassVar[int]
    JITTER_FIELD_NUMBER: _ClassVar[int]
    SCALE_MIN_FIELD_NUMBER: _ClassVar[int]
    SCALE_MAX_FIELD_NUMBER: _ClassVar[int]
    ROTATE_DEGREES_FIELD_NUMBER: _ClassVar[int]
    FINAL_JITTER_FIELD_NUMBER: _ClassVar[int]
    REFLECT_FIELD_NUMBER: _ClassVar[int]
    BLUR_FIELD_NUMBER: _ClassVar[int]
    pad: int
    jitter: int
    scale_min: float
    scale_max: float
    rotate_degrees: float
    final_jitter: int
    reflect: bool
    blur: float
    def __init__(self, pad: _Optional[int] = ..., jitter: _Optional[int] = ..., scale_min: _Optional[float] = ..., scale_max: _Optional[float] = ..., rotate_degrees: _Optional[float] = ..., final_jitter: _Optional[int] = ..., reflect: _Optional[bool] = ..., blur: _Optional[float] = ...) -> None: ...

class MaximizeOptions(_message.Message):
    __slots__ = ("parameterization", "decorrelate", "optimizer", "learning_rate", "transforms", "l1", "l2", "total_variation", "blur_every", "blur_sigma", "redirect_relu_steps")
    PARAMETERIZATION_FIELD_NUMBER: _ClassVar[int]
    DECORRELATE_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    TRANSFORMS_FIELD_NUMBER: _ClassVar[int]
    L1_FIELD_NUMBER: _ClassVar[int]
    L2_FIELD_NUMBER: _ClassVar[int]
    TOTAL_VARIATION_FIELD_NUMBER: _ClassVar[int]
    BLUR_EVERY_FIELD_NUMBER: _ClassVar[int]
    BLUR_SIGMA_FIELD_NUMBER: _ClassVar[int]
    REDIRECT_RELU_STEPS_FIELD_NUMBER: _ClassVar[int]
    parameterization: Parameterization
    decorrelate: bool
    optimizer: Optimizer
    learning_rate: float
    transforms: Transforms
    l1: float
    l2: float
    total_variation: float
    blur_every: int
    blur_sigma: float
    redirect_relu_steps: int
    def __init__(self, parameterization: _Optional[_Union[Parameterization, str]] = ..., decorrelate: _Optional[bool] = ..., optimizer: _Optional[_Union[Optimizer, str]] = ..., learning_rate: _Optional[float] = ..., transforms: _Optional[_Union[Transforms, _Mapping]] = ..., l1: _Optional[float] = ..., l2: _Optional[float] = ..., total_variation: _Optional[float] = ..., blur_every: _Optional[int] = ..., blur_sigma: _Optional[float] = ..., redirect_relu_steps: _Optional[int] = ...) -> None: ...

class ObjectiveTerm(_message.Message):
    __slots__ = ("kind", "weight", "layer", "channel", "neuron_x", "neuron_y", "vector")
    KIND_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    NEURON_X_FIELD_NUMBER: _ClassVar[int]
    NEURON_Y_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    kind: TermKind
    weight: float
    layer: str
    channel: int
    neuron_x: int
    neuron_y: int
    vector: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, kind: _Optional[_Union[TermKind, str]] = ..., weight: _Optional[float] = ..., layer: _Optional[str] = ..., channel: _Optional[int] = ..., neuron_x: _Optional[int] = ..., neuron_y: _Optional[int] = ..., vector: _Optional[_Iterable[float]] = ...) -> None: ...

class ObjectiveExpression(_message.Message):
    __slots__ = ("terms",)
    TERMS_FIELD_NUMBER: _ClassVar[int]
    terms: _containers.RepeatedCompositeFieldContainer[ObjectiveTerm]
    def __init__(self, terms: _Optional[_Iterable[_Union[ObjectiveTerm, _Mapping]]] = ...) -> None: ...

class InitImage(_message.Message):
    __slots__ = ("data", "keep_close")
    DATA_FIELD_NUMBER: _ClassVar[int]
    KEEP_CLOSE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    keep_close: float
    def __init__(self, data: _Optional[bytes] = ..., keep_close: _Optional[float] = ...) -> None: ...

class MaximizeRequest(_message.Message):
    __slots__ = ("layer", "channels", "objective", "size", "steps", "preset", "options", "seed", "images_per_channel", "preview_every", "preview_size", "no_preview_images", "expression", "interpolate_to", "init_image")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    IMAGES_PER_CHANNEL_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_EVERY_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_SIZE_FIELD_NUMBER: _ClassVar[int]
    NO_PREVIEW_IMAGES_FIELD_NUMBER: _ClassVar[int]
    EXPRESSION_FIELD_NUMBER: _ClassVar[int]
    INTERPOLATE_TO_FIELD_NUMBER: _ClassVar[int]
    INIT_IMAGE_FIELD_NUMBER: _ClassVar[int]
    layer: str
    channels: _containers.RepeatedScalarFieldContainer[int]
    objective: Objective
    size: int
    steps: int
    preset: Preset
    options: MaximizeOptions
    seed: int
    images_per_channel: int
    preview_every: int
    preview_size: int
    no_preview_images: bool
    expression: ObjectiveExpression
    interpolate_to: ObjectiveExpression
    init_image: InitImage
    def __init__(self, layer: _Optional[str] = ..., channels: _Optional[_Iterable[int]] = ..., objective: _Optional[_Union[Objective, _Mapping]] = ..., size: _Optional[int] = ..., steps: _Optional[int] = ..., preset: _Optional[_Union[Preset, str]] = ..., options: _Optional[_Union[MaximizeOptions, _Mapping]] = ..., seed: _Optional[int] = ..., images_per_channel: _Optional[int] = ..., preview_every: _Optional[int] = ..., preview_size: _Optional[int] = ..., no_preview_images: _Optional[bool] = ..., expression: _Optional[_Union[ObjectiveExpression, _Mapping]] = ..., interpolate_to: _Optional[_Union[ObjectiveExpression, _Mapping]] = ..., init_image: _Optional[_Union[InitImage, _Mapping]] = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("index", "channel", "seed", "png", "width", "height")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    PNG_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    index: int
    channel: int
    seed: int
    png: bytes
    width: int
    height: int
    def __init__(self, index: _Optional[int] = ..., channel: _Optional[int] = ..., seed: _Optional[int] = ..., png: _Optional[bytes] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class QueuePosition(_message.Message):
    __slots__ = ("position",)
    POSITION_FIELD_NUMBER: _ClassVar[int]
    position: int
    def __init__(self, position: _Optional[int] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("step", "total_steps", "objective", "previews")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    PREVIEWS_FIELD_NUMBER: _ClassVar[int]
    step: int
    total_steps: int
    objective: _containers.RepeatedScalarFieldContainer[float]
    previews: _containers.RepeatedCompositeFieldContainer[Image]
    def __init__(self, step: _Optional[int] = ..., total_steps: _Optional[int] = ..., objective: _Optional[_Iterable[float]] = ..., previews: _Optional[_Iterable[_Union[Image, _Mapping]]] = ...) -> None: ...

class FinalImages(_message.Message):
    __slots__ = ("images",)
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[Image]
    def __init__(self, images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ...) -> None: ...

class RunSummary(_message.Message):
    __slots__ = ("activation", "objective", "steps", "duration_seconds", "steps_per_second", "device", "queued_seconds", "cached", "robust_activation", "saturated_fraction", "stop_reason")
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STEPS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    QUEUED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    ROBUST_ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    SATURATED_FRACTION_FIELD_NUMBER: _ClassVar[int]
    STOP_REASON_FIELD_NUMBER: _ClassVar[int]
    activation: _containers.RepeatedScalarFieldContainer[float]
    objective: _containers.RepeatedScalarFieldContainer[float]
    steps: int
    duration_seconds: float
    steps_per_second: float
    device: str
    queued_seconds: float
    cached: bool
    robust_activation: _containers.RepeatedScalarFieldContainer[float]
    saturated_fraction: _containers.RepeatedScalarFieldContainer[float]
    stop_reason: StopReason
    def __init__(self, activation: _Optional[_Iterable[float]] = ..., objective: _Optional[_Iterable[float]] = ..., steps: _Optional[int] = ..., duration_seconds: _Optional[float] = ..., steps_per_second: _Optional[float] = ..., device: _Optional[str] = ..., queued_seconds: _Optional[float] = ..., cached: _Optional[bool] = ..., robust_activation: _Optional[_Iterable[float]] = ..., saturated_fraction: _Optional[_Iterable[float]] = ..., stop_reason: _Optional[_Union[StopReason, str]] = ...) -> None: ...

class MaximizeResponse(_message.Message):
    __slots__ = ("queued", "progress", "final_images", "summary")
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    FINAL_IMAGES_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    queued: QueuePosition
    progress: Progress
    final_images: FinalImages
    summary: RunSummary
    def __init__(self, queued: _Optional[_Union[QueuePosition, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., final_images: _Optional[_Union[FinalImages, _Mapping]] = ..., summary: _Optional[_Union[RunSummary, _Mapping]] = ...) -> None: ...

class ExportOnnxRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ExportOnnxResponse(_message.Message):
    __slots__ = ("total_bytes", "sha256", "file_name", "data")
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    total_bytes: int
    sha256: str
    file_name: str
    data: bytes
    def __init__(self, total_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., file_name: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class FindExemplarsRequest(_message.Message):
    __slots__ = ("layer", "channels", "count")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    layer: str
    channels: _containers.RepeatedScalarFieldContainer[int]
    count: int
    def __init__(self, layer: _Optional[str] = ..., channels: _Optional[_Iterable[int]] = ..., count: _Optional[int] = ...) -> None: ...

class Exemplar(_message.Message):
    __slots__ = ("png", "width", "height", "activation", "pre_activation", "source", "x", "y", "side")
    PNG_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    PRE_ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    png: bytes
    width: int
    height: int
    activation: float
    pre_activation: float
    source: str
    x: int
    y: int
    side: int
    def __init__(self, png: _Optional[bytes] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., activation: _Optional[float] = ..., pre_activation: _Optional[float] = ..., source: _Optional[str] = ..., x: _Optional[int] = ..., y: _Optional[int] = ..., side: _Optional[int] = ...) -> None: ...

class ChannelExemplars(_message.Message):
    __slots__ = ("channel", "top", "bottom")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    BOTTOM_FIELD_NUMBER: _ClassVar[int]
    channel: int
    top: _containers.RepeatedCompositeFieldContainer[Exemplar]
    bottom: _containers.RepeatedCompositeFieldContainer[Exemplar]
    def __init__(self, channel: _Optional[int] = ..., top: _Optional[_Iterable[_Union[Exemplar, _Mapping]]] = ..., bottom: _Optional[_Iterable[_Union[Exemplar, _Mapping]]] = ...) -> None: ...

class ScanProgress(_message.Message):
    __slots__ = ("photos_done", "photos_total", "skipped")
    PHOTOS_DONE_FIELD_NUMBER: _ClassVar[int]
    PHOTOS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    photos_done: int
    photos_total: int
    skipped: int
    def __init__(self, photos_done: _Optional[int] = ..., photos_total: _Optional[int] = ..., skipped: _Optional[int] = ...) -> None: ...

class ExemplarsSummary(_message.Message):
    __slots__ = ("collection", "photos", "skipped", "crops", "crop_size", "cached")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    PHOTOS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    CROPS_FIELD_NUMBER: _ClassVar[int]
    CROP_SIZE_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    collection: str
    photos: int
    skipped: int
    crops: int
    crop_size: int
    cached: bool
    def __init__(self, collection: _Optional[str] = ..., photos: _Optional[int] = ..., skipped: _Optional[int] = ..., crops: _Optional[int] = ..., crop_size: _Optional[int] = ..., cached: _Optional[bool] = ...) -> None: ...

class FindExemplarsResponse(_message.Message):
    __slots__ = ("progress", "channel", "summary")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    progress: ScanProgress
    channel: ChannelExemplars
    summary: ExemplarsSummary
    def __init__(self, progress: _Optional[_Union[ScanProgress, _Mapping]] = ..., channel: _Optional[_Union[ChannelExemplars, _Mapping]] = ..., summary: _Optional[_Union[ExemplarsSummary, _Mapping]] = ...) -> None: ...
