"""featviz: synthesize images that maximally activate a unit of ImageNet VGG16, over gRPC.

A thin SDK (grpcio + protobuf; numpy and Pillow only for arrays and images) for the featviz
server. Example::

    import featviz

    with featviz.Client("localhost:50051") as client:
        result = client.maximize("block5_conv2", 410, size=64, steps=32)
        result.save("block5_conv2_410.png")
"""

from featviz.aio import AsyncClient
from featviz.client import Client
from featviz.description import InputSpec, LayerInfo, ModelDescription, WeightsInfo
from featviz.errors import (
    Cancelled,
    ChecksumMismatch,
    DeadlineExceeded,
    FeatvizError,
    FieldViolation,
    Internal,
    InvalidArgument,
    NotFound,
    Overloaded,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from featviz.exemplars import ChannelExemplars, Exemplar, Exemplars, ScanProgress
from featviz.objectives import (
    Objective,
    channel,
    direction,
    diversity,
    l1,
    l2,
    neuron,
    total_variation,
)
from featviz.objectives import parse as parse_objective
from featviz.options import parse_channels
from featviz.result import Finished, Image, Progress, Queued, Result, Retrying, Statistics, Update
from featviz.retry import RetryPolicy

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "Cancelled",
    "ChannelExemplars",
    "ChecksumMismatch",
    "Client",
    "DeadlineExceeded",
    "Exemplar",
    "Exemplars",
    "FeatvizError",
    "FieldViolation",
    "Finished",
    "Image",
    "InputSpec",
    "Internal",
    "InvalidArgument",
    "LayerInfo",
    "ModelDescription",
    "NotFound",
    "Objective",
    "Overloaded",
    "PermissionDenied",
    "Progress",
    "Queued",
    "Result",
    "RetryPolicy",
    "Retrying",
    "ScanProgress",
    "Statistics",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Update",
    "WeightsInfo",
    "__version__",
    "channel",
    "direction",
    "diversity",
    "l1",
    "l2",
    "neuron",
    "parse_channels",
    "parse_objective",
    "total_variation",
]
