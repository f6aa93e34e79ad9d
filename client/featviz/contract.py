"""The contract's own words for its fields: the comment above each field of
proto/featviz/v1/featviz.proto, read from the descriptor set that proto/generate.sh writes with
the generated code (`featviz.binpb`, with source info). The SDK's options, the CLI's flags and
the server's DescribeModel describe a request field in these words, so it is described once.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor

# Path components in SourceCodeInfo: FileDescriptorProto.message_type, DescriptorProto.field.
_MESSAGE, _FIELD = 4, 2


@cache
def _comments() -> dict[str, str]:
    """Every message field's leading comment, by the field's full name."""
    data = files("featviz.v1").joinpath("featviz.binpb").read_bytes()
    (proto,) = descriptor_pb2.FileDescriptorSet.FromString(data).file
    comments = {}
    for location in proto.source_code_info.location:
        path = location.path
        if len(path) == 4 and path[0] == _MESSAGE and path[2] == _FIELD:
            message = proto.message_type[path[1]]
            name = f"{proto.package}.{message.name}.{message.field[path[3]].name}"
            comments[name] = " ".join(location.leading_comments.split())
    return comments


def field_help(message: Descriptor, path: str) -> str:
    """One line of help for the field at dotted `path` under `message`, from its comment.

    >>> from featviz.v1 import featviz_pb2
    >>> field_help(featviz_pb2.MaximizeRequest.DESCRIPTOR, "options.l1")
    'weight of the L1 penalty on the centred image'
    """
    *parents, name = path.split(".")
    for parent in parents:
        message = message.fields_by_name[parent].message_type
    text = _comments()[message.fields_by_name[name].full_name].removesuffix(".")
    return text[0].lower() + text[1:] if text[1:2].islower() else text
