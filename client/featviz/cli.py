"""The `featviz` command: maximize, describe, export-onnx and atlas against a featviz server.

Results go to stdout, progress and errors to stderr. Exit status: 0 success, 1 the server (or
the network) failed, 2 a usage error, 130 interrupted. Errors print one line, no traceback.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NoReturn

from featviz.atlas_cli import add_atlas_arguments, run_atlas
from featviz.client import Client
from featviz.connection import DEFAULT_TARGET, TlsLike
from featviz.description import ModelDescription
from featviz.errors import FeatvizError, Unauthenticated, Unavailable
from featviz.objectives import Objective
from featviz.objectives import parse as parse_objective
from featviz.options import OPTIONS, flag, parse_channels, suggestion
from featviz.progressbar import ProgressBar
from featviz.result import Finished, Progress, Queued, Result, Retrying, Update, is_one_file
from featviz.retry import RetryPolicy

EXIT_SERVER_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# Options the CLI sets itself: a terminal shows no preview images.
_FIXED_OPTIONS = {"preview_images": False}
# Options whose flags the CLI reads as text and turns into values itself.
_TEXT_OPTIONS = {"interpolate_to"}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line `argv` (default: sys.argv) and return the exit status."""
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        given = unknown[0].split("=")[0]
        hint = suggestion(given, args.subparser._option_string_actions)
        args.subparser.error(f"unrecognized argument {unknown[0]!r}{hint}")
    try:
        return args.command(args)
    except _UsageError as error:
        args.subparser.error(str(error))
    except FeatvizError as error:
        _print_error(f"{error}{_hint(error, args)}")
    except (OSError, ImportError) as error:
        _print_error(str(error))
    except KeyboardInterrupt:
        _print_error("interrupted")
        return EXIT_INTERRUPTED
    return EXIT_SERVER_ERROR


class _UsageError(Exception):
    """A bad command line found after parsing (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (the usage itself is one --help away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _print_error(message: str) -> None:
    print(f"featviz: error: {message}", file=sys.stderr)


def _hint(error: FeatvizError, args: argparse.Namespace) -> str:
    if isinstance(error, Unauthenticated):
        return " (set --token or FEATVIZ_TOKEN)"
    if isinstance(error, Unavailable):
        return f" (is a featviz server running at {', '.join(_targets(args))}?)"
    return f" (request id {error.request_id})" if error.request_id else ""


def _targets(args: argparse.Namespace) -> list[str]:
    return args.target or [os.environ.get("FEATVIZ_TARGET", DEFAULT_TARGET)]


def _tls(args: argparse.Namespace) -> TlsLike:
    return args.tls_ca or args.tls or None


def _connected(
    command: Callable[[Client, argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """`command(client, args)` with a client of the command line's connection flags."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            client = Client(_targets(args), args.token, _tls(args), args.timeout, args.retries)
        except (ValueError, TypeError, OSError) as error:
            raise _UsageError(str(error)) from None
        with client:
            return command(client, args)

    return run


# ---------------------------------------------------------------------------------------------
# featviz maximize


@_connected
def _maximize(client: Client, args: argparse.Namespace) -> int:
    options = {name: getattr(args, name) for name in OPTIONS if name not in _FIXED_OPTIONS}
    channels = 1 if args.channels is None else len(args.channels)
    images = channels * (args.images_per_channel or 1)
    output = Path(args.output) if args.output else None
    if not args.sheet and images > 1 and output is not None and is_one_file(output):
        raise _UsageError(f"{images} images need a directory for -o, not {output}")
    try:
        if args.channels is None:  # LAYER is an objective expression
            if ":" not in args.layer:  # every unit of an expression is LAYER:...
                raise _UsageError(
                    f"{args.layer} needs CHANNELS (e.g. {args.layer} 0), or write an objective "
                    f"such as {args.layer}:0"
                )
            if options["objective"] is not None:
                raise _UsageError("--objective is for LAYER CHANNELS; write neurons as L:C@X,Y")
            options["objective"] = _objective(client, args.layer)
            target = {}
            label = str(options["objective"])
        else:
            target = {"layer": args.layer, "channels": args.channels}
            label = f"{args.layer} {_channels_text(args.channels)}"
        if options["interpolate_to"] is not None:
            options["interpolate_to"] = _objective(client, options["interpolate_to"])
        updates = client.stream_maximize(**target, **options, **_FIXED_OPTIONS)
    except (ValueError, TypeError) as error:
        raise _UsageError(str(error)) from None
    bar = ProgressBar(label, enabled=not args.quiet)
    try:
        result = _follow(updates, bar)
    finally:
        bar.close()
    if args.sheet:
        paths = [_save_sheet(result, output, args.columns)]
        paths += paths * (len(result.images) - 1)  # every image's row points at the sheet
    else:
        paths = result.save(output or Path("."))
    _print_result(result, paths)
    return 0


def _objective(client: Client, text: str) -> Objective:
    """The objective written in `text`; a direction asks the server for its layer's size."""
    describe = functools.cache(client.describe_model)  # asked once, if a direction needs it
    return parse_objective(text, lambda layer: describe().layer(layer).channels)


def _channels_text(channels: list[int]) -> str:
    return str(channels[0]) if len(channels) == 1 else f"({len(channels)} channels)"


def _follow(updates: Iterable[Update], bar: ProgressBar) -> Result:
    """Draw the updates of a run on `bar` and return its result."""
    for update in updates:
        if isinstance(update, Progress):
            objective = sum(update.objective) / max(len(update.objective), 1)
            mean = "objective" if len(update.objective) == 1 else "mean objective"
            text = f"{update.step}/{update.total_steps} steps  {mean} {objective:.4g}"
            bar.update(update.step, update.total_steps, text)
        elif isinstance(update, Queued):
            bar.message(f"queued, position {update.position}")
        elif isinstance(update, Retrying):
            bar.message(str(update))
        elif isinstance(update, Finished):
            return update.result
    raise AssertionError("unreachable: the stream ends with Finished or raises")


def _save_sheet(result: Result, output: Path | None, columns: int | None) -> Path:
    try:
        from featviz.sheet import contact_sheet  # needs Pillow: only for --sheet
    except ModuleNotFoundError as error:
        if error.name != "PIL":
            raise
        raise ImportError("--sheet needs Pillow: pip install 'featviz[images]'") from None
    several = len(set(result.channels)) < len(result.images)
    labels = [
        f"{image.channel}" + (f" s{image.seed}" if several else "") + f": {activation:.0f}"
        for image, activation in zip(result.images, result.activations, strict=True)
    ]
    path = output or Path(".")
    if not is_one_file(path):
        path = path / f"{result.layer or 'objective'}_sheet.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet([image.png for image in result.images], labels, columns).save(path)
    return path


def _print_result(result: Result, paths: Sequence[Path]) -> None:
    print(
        f"{'channel':>7}  {'seed':>4}  {'activation':>10}  {'robust':>10}  {'views/plain':>11}  "
        f"{'saturated':>9}  {'objective':>10}  file"
    )
    rows = zip(
        result.images, result.activations, result.robust_activations, result.robustness,
        result.saturated_fractions, result.objectives, paths,
        strict=True,
    )  # fmt: skip
    for image, activation, steady, ratio, share, objective, path in rows:
        channel = image.channel if result.layer else "-"  # an expression reads no one channel
        print(
            f"{channel:>7}  {image.seed:>4}  {activation:>10.4g}  {steady:>10.4g}  "
            f"{ratio:>11.2f}  {share:>9.1%}  {objective:>10.4g}  {path}"
        )
    stats = result.statistics
    cached = ", from the cache" if stats.cached else ""
    why = {"converged": " (converged)", "step_limit": " (step limit)"}.get(stats.stop_reason, "")
    print(
        f"{len(result.images)} image(s), {stats.steps} steps{why} "
        f"in {stats.duration_seconds:.1f} s "
        f"({stats.steps_per_second:.1f} steps/s on {stats.device}{cached})",
        file=sys.stderr,
    )


# ---------------------------------------------------------------------------------------------
# featviz describe


@_connected
def _describe(client: Client, args: argparse.Namespace) -> int:
    description = client.describe_model(args.size)
    if args.json:
        print(json.dumps(description.to_dict(), indent=2))
    elif args.options:
        print(_options_table(description))
    else:
        print(_layer_table(description))
    return 0


def _options_table(description: ModelDescription) -> str:
    """Every recipe field: its flag, type, range and the value in each preset."""
    presets = description.presets
    rows = [["option", "type", "range", *(p.name for p in presets), "help"]]
    for field in description.recipe_fields:
        if field.type in ("int", "float"):
            allowed = f"{field.minimum:g}..{field.maximum:g}"
        else:
            allowed = "|".join(field.choices) if field.choices else "yes|no"
        keyword = field.request_field.rpartition(".")[2]
        name = flag(keyword) if keyword else f"({field.name})"
        if field.name.startswith("transforms."):
            name = f"--transforms {keyword}="
        rule = f" ({field.constraint})" if field.constraint else ""
        values = [_shown(p.values[field.name]) for p in presets]
        rows.append([name, field.type, allowed, *values, field.help + rule])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        + f"  {row[-1]}"
        for row in rows
    ]
    lines.append(f"default preset: {description.default_preset}; (NAME): set by presets only")
    return "\n".join(line.rstrip() for line in lines)


def _shown(value: float | bool | str) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _layer_table(description: ModelDescription) -> str:
    spec = description.input
    lines = [
        f"{description.model_name} on {description.device}, weights {description.weights.source} "
        f"(sha256 {description.weights.sha256[:16]}...)",
        f"input {description.input_size}x{description.input_size} {spec.channel_order} "
        f"{spec.layout} in [{spec.value_min:g}, {spec.value_max:g}], sizes "
        f"{spec.min_size}..{spec.max_size}",
        "",
        f"{'layer':<13} {'kind':<4} {'output (HxWxC)':>14} {'params':>10} "
        f"{'receptive field':>15} {'stride':>6}",
    ]
    for layer in description.layers:
        shape = "x".join(map(str, layer.output_shape))
        lines.append(
            f"{layer.name:<13} {layer.kind:<4} {shape:>14} {layer.parameters:>10,} "
            f"{layer.receptive_field:>15} {layer.stride:>6}"
        )
    lines.append(f"{'total parameters':<33} {description.total_parameters:>10,}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# featviz export-onnx


@_connected
def _export_onnx(client: Client, args: argparse.Namespace) -> int:
    bar = ProgressBar("export-onnx")

    def progress(received: int, total: int) -> None:
        bar.update(received, total, f"{received / 1e6:.1f}/{total / 1e6:.1f} MB")

    try:
        path, sha256 = client.export_onnx(args.output, on_progress=progress)
    finally:
        bar.close()
    print(f"{path}  sha256 {sha256} (verified)")
    return 0


# ---------------------------------------------------------------------------------------------
# featviz atlas


def _atlas(args: argparse.Namespace) -> int:
    """The atlas keeps runs in flight on every target at once: an asynchronous client each."""
    try:
        return run_atlas(args, _targets(args), _tls(args))
    except ValueError as error:  # a layer or channel the model lacks
        raise _UsageError(str(error)) from None


# ---------------------------------------------------------------------------------------------
# The parser


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="featviz",
        description="Synthesize images that maximally activate units of ImageNet VGG16, "
        "using a featviz server.",
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    connection = _connection_parser()

    maximize = commands.add_parser(
        "maximize",
        parents=[connection],
        help="synthesize one image per channel",
        description="Synthesize one image per channel of LAYER that activates it maximally, "
        "or images that maximize an OBJECTIVE expression.",
        epilog="examples: featviz maximize block5_conv2 410 -o out.png; "
        'featviz maximize "block4_conv3:12 - 0.5*block3_conv3:40" -o both.png. '
        "OBJECTIVE: terms joined by + and -, each optionally times a number: LAYER:CHANNEL "
        "(channel mean), LAYER:CHANNEL@X,Y (neuron), LAYER:{C=V,...} (direction), "
        "LAYER:diversity, and the input penalties l1, l2, tv.",
    )
    maximize.add_argument(
        "layer",
        metavar="LAYER|OBJECTIVE",
        help="layer name, e.g. block5_conv2; or, without CHANNELS, an objective expression",
    )
    maximize.add_argument(
        "channels",
        metavar="CHANNELS",
        nargs="?",
        type=_argument_type(parse_channels),
        help="e.g. 14, 0-63 or 3,7,9",
    )
    maximize.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help="a .png file (one image, or the --sheet) or a directory (default: .)",
    )
    maximize.add_argument("--sheet", action="store_true", help="write one labelled contact sheet")
    maximize.add_argument(
        "--columns",
        type=_argument_type(_positive),
        metavar="N",
        help="columns of the contact sheet",
    )
    maximize.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_option_flags(maximize.add_argument_group("optimization (default: the preset's)"))
    maximize.set_defaults(command=_maximize, subparser=maximize)

    describe = commands.add_parser(
        "describe",
        parents=[connection],
        help="print the model's layer table",
        description="Print the model's layers, their output shapes and parameter counts.",
    )
    describe.add_argument("--json", action="store_true", help="print JSON")
    describe.add_argument(
        "--options",
        action="store_true",
        help="print every optimization option: range and value in each preset",
    )
    describe.add_argument("--size", type=int, default=0, help="input size (default: the server's)")
    describe.set_defaults(command=_describe, subparser=describe)

    export = commands.add_parser(
        "export-onnx",
        parents=[connection],
        help="download the model as ONNX",
        description="Download the ONNX export of the model and verify its sha256.",
    )
    export.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        default=".",
        help="file or directory to write (default: the server's file name in .)",
    )
    export.set_defaults(command=_export_onnx, subparser=export)

    atlas = commands.add_parser(
        "atlas",
        parents=[connection],
        help="render every channel of some layers into a static site",
        description="Render every channel of the chosen layers (image, variants, "
        "negative, natural exemplars) through one or several servers into a static site; "
        "a killed atlas continues where it stopped.",
        epilog="example: featviz atlas --layers block1_conv2,block5_conv2 --channels 0-7 -o site/",
    )
    add_atlas_arguments(atlas)
    atlas.set_defaults(command=_atlas, subparser=atlas)
    return parser


def _connection_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--target",
        action="append",
        metavar="HOST:PORT",
        help="server address; repeat or separate with commas for replicas "
        f"(env FEATVIZ_TARGET; default {DEFAULT_TARGET})",
    )
    group.add_argument(
        "--token",
        default=os.environ.get("FEATVIZ_TOKEN"),
        help="bearer token (env FEATVIZ_TOKEN)",
    )
    group.add_argument("--tls", action="store_true", help="use TLS with the system's CAs")
    group.add_argument("--tls-ca", metavar="FILE", help="use TLS with this CA bundle")
    group.add_argument("--timeout", type=float, metavar="SECONDS", help="give up after this")
    group.add_argument(
        "--retries",
        type=int,
        default=RetryPolicy.retries,
        metavar="N",
        help=f"retries when busy/unreachable (default {RetryPolicy.retries})",
    )
    return parser


def _add_option_flags(group: argparse._ArgumentGroup) -> None:
    """One flag per maximize option, from the same table that checks the SDK's keywords."""
    for name, option in OPTIONS.items():
        if name in _FIXED_OPTIONS:
            continue
        if name in _TEXT_OPTIONS:
            group.add_argument(flag(name), metavar="OBJECTIVE", help=option.help)
        elif option.enum is not None:
            group.add_argument(flag(name), choices=option.choices, help=option.help)
        elif option.type is bool:
            group.add_argument(flag(name), action=argparse.BooleanOptionalAction, help=option.help)
        else:
            parse = _argument_type(option.parse) if option.parse else option.type
            group.add_argument(flag(name), type=parse, help=option.help)


def _positive(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None
    if number < 1:
        raise ValueError(f"must be at least 1, got {number}")
    return number


def _argument_type(parse: Callable[[str], object]) -> Callable[[str], object]:
    """`parse` for argparse, which shows the message of an ArgumentTypeError only."""

    def convert(text: str) -> object:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return convert


if __name__ == "__main__":
    sys.exit(main())
