"""Writing the streamed ONNX export to disk, trusting it only once its sha256 matches.

Chunks go to `<file>.part`; the file appears under its real name only when complete and
verified, so an interrupted or corrupted download never looks like a good one.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from featviz.errors import ChecksumMismatch, FeatvizError
from featviz.result import Retrying
from featviz.v1 import featviz_pb2

ProgressCallback = Callable[[int, int], None]


class OnnxDownload:
    """Receives ExportOnnx chunks for `path` (a file, or a directory to put the server's file
    name in); `on_progress(bytes_received, total_bytes)` is called after each chunk."""

    def __init__(self, path: str | os.PathLike[str], on_progress: ProgressCallback | None) -> None:
        self._requested = Path(path)
        self._on_progress = on_progress
        self._file: BinaryIO | None = None
        self._path = self._requested
        self._part: Path | None = None  # where the chunks go, once the first one came

    def __enter__(self) -> OnnxDownload:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._file is not None:
            self._file.close()
        if self._part is not None:
            self._part.unlink(missing_ok=True)  # gone already after a successful finish()

    def feed(self, chunk: featviz_pb2.ExportOnnxResponse | Retrying) -> None:
        """Append a chunk; a restarted call starts the file over."""
        if isinstance(chunk, Retrying):
            if chunk.restarted and self._file is not None:
                self._file.close()
                self._file = None
            return
        if self._file is None:
            self._start(chunk)
        assert self._file is not None
        self._file.write(chunk.data)
        self._hash.update(chunk.data)
        self._received += len(chunk.data)
        if self._on_progress is not None:
            self._on_progress(self._received, self._total)

    def _start(self, first: featviz_pb2.ExportOnnxResponse) -> None:
        if not first.sha256 or not first.file_name:
            raise FeatvizError("the server's first ONNX chunk lacks the file name or sha256")
        self._total, self._sha256 = first.total_bytes, first.sha256
        self._path = (
            self._requested / first.file_name if self._requested.is_dir() else self._requested
        )
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._part = self._path.with_name(self._path.name + ".part")
        self._file = self._part.open("wb")
        self._hash = hashlib.sha256()
        self._received = 0

    def finish(self) -> tuple[Path, str]:
        """Verify size and sha256, then move the file into place: (path, sha256)."""
        if self._file is None:
            raise FeatvizError("the server sent no ONNX data")
        self._file.close()
        self._file = None
        actual = self._hash.hexdigest()
        assert self._part is not None
        if self._received != self._total or actual != self._sha256:
            self._part.unlink()
            raise ChecksumMismatch(
                f"ONNX download corrupted: got {self._received} bytes with sha256 {actual}, "
                f"the server announced {self._total} bytes with sha256 {self._sha256}"
            )
        self._part.replace(self._path)
        return self._path, actual
