"""The recipe's schema, read from its one declarative table (`job.Recipe` and `job.Transforms`,
one `option(...)` per field): every field flattened ("transforms.pad"), with its type, choices,
range and the request field that sets it (or, set only by presets, its help); `check`, the one
place that validates a recipe (ranges against the server's limits, and the rules between
fields); and what DescribeModel serves.

A new numeric option is one `option(...)` line in `job.Recipe` plus its use in the engine (and,
to set it per request, its field in the proto's MaximizeOptions, whose comment describes it).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .job import Bound, Recipe, Spec, Transforms

FieldType = Literal["int", "float", "bool", "choice"]
LIMIT_NAMES = ("max_size", "max_steps")  # the server limits that a field's bound may name
Limits = Mapping[str, float]  # the server's limits by name (LIMIT_NAMES), e.g. {"max_size": 512}


@dataclass(frozen=True)
class Field:
    """One recipe field, flattened: `name` is "learning_rate" or "transforms.pad"."""

    name: str
    type: FieldType
    spec: Spec
    choices: tuple[str, ...] = ()


class OptionError(ValueError):
    """A recipe field has a value the engine cannot run; `field` is its name, `involves` the
    other fields that its range or rule depends on."""

    def __init__(self, field: str, description: str, involves: tuple[str, ...] = ()) -> None:
        super().__init__(f"{field}: {description}")
        self.field = field
        self.description = description
        self.involves = involves


def _fields(cls: type, prefix: str = "") -> Iterator[Field]:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("spec")
        if spec is None:
            raise TypeError(f"{cls.__name__}.{f.name} has no option(...): give its range")
        hint = hints[f.name]
        if hint == Transforms | None:
            yield from _fields(Transforms, "transforms.")
        elif typing.get_origin(hint) is Literal:
            yield Field(prefix + f.name, "choice", spec, typing.get_args(hint))
        else:
            assert not isinstance(hint, types.UnionType), f"{f.name}: unsupported type {hint}"
            yield Field(prefix + f.name, hint.__name__, spec)


FIELDS: tuple[Field, ...] = tuple(_fields(Recipe))
BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}


def _check_bound_names() -> None:
    """Every bound given by name names a limit or a field, optionally divided by a whole number
    ("size/2"): an unknown name would leave the field unbounded."""
    for f in FIELDS:
        for bound in (f.spec.low, f.spec.high):
            if not isinstance(bound, str):
                continue
            name, slash, divisor = bound.partition("/")
            known = name in LIMIT_NAMES or name in BY_NAME
            if not known or (slash and not divisor.isdigit()):
                raise TypeError(
                    f"{f.name}: bound {bound!r} names no limit ({', '.join(LIMIT_NAMES)}) "
                    "or field, optionally /N"
                )


_check_bound_names()

IDENTITY_TRANSFORMS = Transforms(pad=0, jitter=0, scale_min=1.0, scale_max=1.0, rotate_degrees=0.0,
                                 final_jitter=0)  # fmt: skip


def value(recipe: Recipe, name: str) -> Any:
    """The value of a (flattened) field; no transforms read as the identity transforms."""
    group, _, member = name.rpartition(".")
    if group == "transforms":
        return getattr(recipe.transforms or IDENTITY_TRANSFORMS, member)
    return getattr(recipe, name)


def check(recipe: Recipe, limits: Limits | None = None) -> Recipe:
    """`recipe` itself, or OptionError naming the first field out of its range or breaking a rule
    (`limits` give the bounds that name server limits; unbounded when absent)."""
    limits = limits or {}
    unknown = set(limits) - set(LIMIT_NAMES)
    if unknown:
        raise ValueError(f"unknown limits {sorted(unknown)}; known: {', '.join(LIMIT_NAMES)}")
    for f in FIELDS:
        if f.name.startswith("transforms.") and recipe.transforms is None:
            continue
        v = value(recipe, f.name)
        if f.type == "choice":
            if v not in f.choices:
                raise OptionError(f.name, f"{v!r} is not one of {', '.join(f.choices)}")
        elif f.type == "bool":
            if not isinstance(v, bool):
                raise OptionError(f.name, f"must be true or false, got {v!r}")
        else:
            low, high = (_resolve(bound, recipe, limits) for bound in (f.spec.low, f.spec.high))
            number = isinstance(v, int) if f.type == "int" else isinstance(v, (int, float))
            if not number or isinstance(v, bool):
                raise OptionError(f.name, f"must be a{'n int' if f.type == 'int' else ' number'}")
            if not (math.isfinite(v) and (low is None or v >= low) and (high is None or v <= high)):
                named = (_field_named(bound) for bound in (f.spec.low, f.spec.high))
                raise OptionError(
                    f.name,
                    f"{v} is out of range; allowed: {_range(low, high)}",
                    tuple(name for name in named if name),
                )
    _check_rules(recipe)
    return recipe


def _check_rules(recipe: Recipe) -> None:
    """The rules between fields (each also said in its field's `constraint`)."""
    if recipe.value_range == "raw" and recipe.parameterization != "pixel":
        raise OptionError(
            "value_range", "'raw' needs the pixel parameterization", ("parameterization",)
        )
    t = recipe.transforms
    if t is not None and t.scale_min > t.scale_max:
        raise OptionError(
            "transforms.scale_min",
            f"{t.scale_min} is larger than scale_max {t.scale_max}",
            ("transforms.scale_max",),
        )


def _field_named(bound: Bound) -> str | None:
    """The field a bound names ("size" for "size/2"), if it names one."""
    name = bound.partition("/")[0] if isinstance(bound, str) else None
    return name if name in BY_NAME else None


def _resolve(bound: Bound, recipe: Recipe | None, limits: Limits) -> float | None:
    """A bound's number: itself, a limit, or another field's value (halved for "NAME/2"); for
    a description (`recipe` None) another field's largest allowed value."""
    if bound is None or isinstance(bound, (int, float)):
        return bound
    name, _, divisor = bound.partition("/")
    if name in LIMIT_NAMES:
        base: float | None = limits.get(name)  # None: a limit this caller does not impose
    elif recipe is not None:
        base = getattr(recipe, name)
    else:
        base = _resolve(BY_NAME[name].spec.high, None, limits)
    if base is None:
        return None
    return base // int(divisor) if divisor else base


def _range(low: float | None, high: float | None) -> str:
    if high is None:
        return f"{low} or more"
    return f"{low}..{high}"


def bounds(f: Field, limits: Limits) -> tuple[float, float]:
    """The smallest and largest value a request may give `f` on a server with `limits`."""
    low, high = (_resolve(bound, None, limits) for bound in (f.spec.low, f.spec.high))
    return (-math.inf if low is None else low), (math.inf if high is None else high)
