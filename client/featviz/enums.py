"""Proto enums as the short lower-case words users type: PRESET_LUCID <-> "lucid"."""

from __future__ import annotations

from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper


def _prefix(enum: EnumTypeWrapper) -> str:
    """ "PRESET_" for Preset: the name of the UNSPECIFIED zero value without that word."""
    return enum.keys()[0].removesuffix("UNSPECIFIED")


def words(enum: EnumTypeWrapper) -> dict[int, str]:
    """Every value but UNSPECIFIED with its word, e.g. {1: "classic", 2: "lucid", 3: "fast"}."""
    return {number: name(enum, number) for number in enum.values()[1:]}


def names(enum: EnumTypeWrapper) -> tuple[str, ...]:
    """The words for every value but UNSPECIFIED, e.g. ("classic", "lucid", "fast")."""
    return tuple(words(enum).values())


def name(enum: EnumTypeWrapper, value: int) -> str:
    """The word for `value`, e.g. "conv" for LAYER_KIND_CONV."""
    return enum.Name(value).removeprefix(_prefix(enum)).lower()


def value(enum: EnumTypeWrapper, word: str) -> int:
    """The value for `word`, e.g. PRESET_LUCID for "lucid" (ValueError if unknown)."""
    return enum.Value(_prefix(enum) + word.upper())
