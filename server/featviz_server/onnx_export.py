"""The ONNX export of the conv base: every layer's activation as a named output, built once.

The graph takes what the PyTorch model takes (`image`: RGB float in [0, 1], NCHW, any batch and
any size from MIN_INPUT_SIZE up), with the Caffe preprocessing inside, and has one output per
layer, named like the layer (`block1_conv1` ... `block5_pool`, conv outputs post-ReLU); a
consumer asks onnxruntime for the outputs it wants. It is exported with the torch.export-based
exporter (the TorchScript one is deprecated); its bytes are deterministic (same torch, onnxscript
and weights, same sha256). It is cached next to the weights with a record of its sha256, so that
later calls only re-hash the file.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from .architecture import LAYERS, MIN_INPUT_SIZE, MODEL_NAME
from .model import INPUT, PREPROCESSING, VGG16
from .weights import atomic_path, file_sha256, tensors_sha256

EXPORT_FILE = f"{MODEL_NAME}_featviz.onnx"
# Bump when the graph's interface or construction changes, so that cached exports are rebuilt;
# the exporter's version is part of it too (another torch writes other bytes).
EXPORT_FORMAT = f"2/torch-{torch.__version__}"
OPSET = 18
INPUT_NAME = "image"
OUTPUT_NAMES = tuple(layer.name for layer in LAYERS)
_building = threading.Lock()


class OnnxExportError(RuntimeError):
    """The export could not be built, or failed its check."""


@dataclass(frozen=True)
class OnnxExport:
    """The cached export file and its identity."""

    path: Path
    sha256: str
    size_bytes: int


class _EveryLayer(VGG16):
    """VGG16 returning the output of every layer, in forward order: one ONNX output each."""

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = []
        x = self.preprocess(image)
        for name in OUTPUT_NAMES:
            x = self.get_submodule(name)(x)
            outputs.append(x)
        return tuple(outputs)


def export_onnx(model: VGG16, cache_dir: Path) -> OnnxExport:
    """The export of `model` in `cache_dir`: the cached file if intact, else built and checked.

    A cached file whose bytes, format or weights do not match its record is rebuilt. Calls are
    serialized, so that concurrent requests build it once.
    """
    path = cache_dir / EXPORT_FILE
    record = path.with_name(f"{path.name}.json")
    weights_sha256 = tensors_sha256(model.tensors())
    with _building:
        if cached := _cached(path, record, weights_sha256):
            return cached
        with atomic_path(path) as partial:
            _build(model, partial, weights_sha256)
            export = OnnxExport(path, file_sha256(partial), partial.stat().st_size)
        facts = {"sha256": export.sha256, "size_bytes": export.size_bytes}
        facts |= {"format": EXPORT_FORMAT, "weights_sha256": weights_sha256}
        with atomic_path(record) as partial:
            partial.write_text(json.dumps(facts, indent=2))
    return export


def _cached(path: Path, record: Path, weights_sha256: str) -> OnnxExport | None:
    """The cached export if its record matches this format, these weights and the file's bytes."""
    try:
        facts = json.loads(record.read_text())
        export = OnnxExport(path, facts["sha256"], facts["size_bytes"])
        intact = (
            facts["format"] == EXPORT_FORMAT
            and facts["weights_sha256"] == weights_sha256
            and path.stat().st_size == export.size_bytes
            and file_sha256(path) == export.sha256
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return export if intact else None


def _build(model: VGG16, destination: Path, weights_sha256: str) -> None:
    """Export a clean CPU copy of `model` (nothing of its device leaks in), then check it."""
    import onnx

    graph = _EveryLayer()
    graph.load_state_dict(model.state_dict())
    graph.requires_grad_(False).eval()
    dims = {
        0: torch.export.Dim("batch"),
        2: torch.export.Dim("height", min=MIN_INPUT_SIZE),
        3: torch.export.Dim("width", min=MIN_INPUT_SIZE),
    }
    try:
        program = torch.onnx.export(
            graph,
            (torch.zeros(2, 3, 64, 64),),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes=(dims,),
            opset_version=OPSET,
            verbose=False,
        )
    except Exception as error:  # the exporter raises many types
        raise OnnxExportError(f"the ONNX export failed: {error}") from error
    program.model.doc_string = (
        f"ImageNet VGG16 conv base. Input `{INPUT_NAME}`: {INPUT}, "
        f"at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE}; preprocessing included ({PREPROCESSING}). "
        "One output per layer, named like Keras' layers; conv outputs are post-ReLU."
    )
    program.model.metadata_props.update(
        {"featviz.weights_sha256": weights_sha256, "featviz.preprocessing": PREPROCESSING}
    )
    for node in program.model.graph.all_nodes():
        # The exporter records source paths and line numbers here: drop them, so that the bytes
        # depend on the network only, not on where or which revision of featviz is installed.
        node.metadata_props.clear()
        for value in node.outputs:
            value.metadata_props.clear()
    program.save(destination, external_data=False)
    try:
        onnx.checker.check_model(str(destination), full_check=True)
    except onnx.checker.ValidationError as error:
        raise OnnxExportError(f"the ONNX export is invalid: {error}") from error
