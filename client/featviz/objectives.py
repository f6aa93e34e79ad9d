"""Objective expressions, as in Lucid: weighted sums of terms on any conv or pool layer.

    import featviz

    objective = featviz.channel("block4_conv3", 12) - 0.5 * featviz.channel("block3_conv3", 40)
    result = client.maximize(objective=objective, size=128)

Terms: `channel` (a feature map's mean), `neuron` (one unit), `direction` (a vector over a
layer's channels), the input penalties `l1`, `l2`, `total_variation` (subtract them), and
`diversity` (add it, with several images). `parse` reads the CLI's text form,
``"block4_conv3:12 - 0.5*block3_conv3:40"``, with a small parser (no eval).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from featviz import enums
from featviz.v1 import featviz_pb2


@dataclass(frozen=True)
class Term:
    """One term; see the functions below for what each kind measures."""

    kind: str
    layer: str = ""
    channel: int = 0
    neuron: tuple[int, int] | None = None
    vector: tuple[float, ...] = ()

    def to_proto(self, weight: float) -> featviz_pb2.ObjectiveTerm:
        term = featviz_pb2.ObjectiveTerm(
            kind=enums.value(featviz_pb2.TermKind, self.kind),
            weight=weight,
            layer=self.layer,
            channel=self.channel,
            vector=self.vector,
        )
        if self.neuron is not None:
            term.neuron_x, term.neuron_y = self.neuron
        return term

    def __str__(self) -> str:
        if self.kind in ("l1", "l2"):
            return self.kind
        if self.kind == "total_variation":
            return "tv"
        if self.kind == "diversity":
            return f"{self.layer}:diversity"
        if self.kind == "direction":
            return f"{self.layer}:{{{len(self.vector)} values}}"
        at = "" if self.neuron is None else f"@{self.neuron[0]},{self.neuron[1]}"
        return f"{self.layer}:{self.channel}{at}"


@dataclass(frozen=True)
class Objective:
    """A weighted sum of terms; combine with `+`, `-`, `*` by a number and unary `-`."""

    terms: tuple[tuple[float, Term], ...]

    def __add__(self, other: Objective) -> Objective:
        if not isinstance(other, Objective):
            return NotImplemented
        return Objective(self.terms + other.terms)

    def __sub__(self, other: Objective) -> Objective:
        if not isinstance(other, Objective):
            return NotImplemented
        return self + -other

    def __mul__(self, weight: float) -> Objective:
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            return NotImplemented
        return Objective(tuple((float(weight) * w, term) for w, term in self.terms))

    __rmul__ = __mul__

    def __neg__(self) -> Objective:
        return self * -1.0

    def to_proto(self) -> featviz_pb2.ObjectiveExpression:
        return featviz_pb2.ObjectiveExpression(terms=[t.to_proto(w) for w, t in self.terms])

    def __str__(self) -> str:
        text = ""
        for i, (weight, term) in enumerate(self.terms):
            sign = "-" if weight < 0 else ("+" if i else "")
            size = abs(weight)
            factor = "" if size == 1 else f"{size:g}*"
            text += f" {sign} " if i else sign
            text += f"{factor}{term}"
        return text


def _term(term: Term) -> Objective:
    return Objective(((1.0, term),))


def channel(layer: str, index: int) -> Objective:
    """The mean of feature map `index` of `layer` (any conv or pool layer)."""
    return _term(Term("channel", _name(layer), _index(index)))


def neuron(layer: str, index: int, x: int | None = None, y: int | None = None) -> Objective:
    """One unit of feature map `index` of `layer` at (x, y) in the layer's output (default: the
    centre; give both or neither)."""
    if (x is None) != (y is None):
        raise ValueError("neuron: give both x and y, or neither (the centre)")
    position = None if x is None or y is None else (_index(x), _index(y))
    return _term(Term("neuron", _name(layer), _index(index), position))


def direction(layer: str, vector: Iterable[float] | Mapping[int, float]) -> Objective:
    """Lucid's `direction`: the mean over positions of the dot product of `layer`'s activations
    with `vector` (one value per channel, scaled to unit length by the server). A mapping
    ``{channel: value}`` needs the layer's channel count: `dense(vector, channels)` makes it."""
    if isinstance(vector, Mapping):
        raise TypeError("direction: give one value per channel (featviz.objectives.dense helps)")
    return _term(Term("direction", _name(layer), vector=tuple(float(v) for v in vector)))


def dense(values: Mapping[int, float], channels: int) -> list[float]:
    """A vector of `channels` zeros with `values` ({channel: value}) set."""
    vector = [0.0] * channels
    for index, value in values.items():
        if not 0 <= index < channels:
            raise ValueError(f"direction: channel {index} is not in 0..{channels - 1}")
        vector[index] = float(value)
    return vector


def l1() -> Objective:
    """Mean absolute deviation of the input image from grey (subtract it: ``- 0.05 * l1()``)."""
    return _term(Term("l1"))


def l2() -> Objective:
    """Mean squared deviation of the input image from grey."""
    return _term(Term("l2"))


def total_variation() -> Objective:
    """Mean absolute difference between neighbouring pixels of the input image."""
    return _term(Term("total_variation"))


def diversity(layer: str) -> Objective:
    """Lucid's diversity of the request's images at `layer` (add it: ``+ 10 * diversity(...)``)."""
    return _term(Term("diversity", _name(layer)))


def _name(layer: str) -> str:
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a layer name such as 'block4_conv3', got {layer!r}")
    return layer


def _index(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"channels and positions are integers >= 0, got {value!r}")
    return value


# --- the text form -------------------------------------------------------------------------

_TOKEN = re.compile(r"\s*(?:(\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)|(\w+)|(.))")
_PENALTIES = {"l1": l1, "l2": l2, "tv": total_variation, "total_variation": total_variation}


def parse(text: str, channels: Callable[[str], int] | None = None) -> Objective:
    """An objective from text: terms joined by ``+`` and ``-``, each optionally multiplied by a
    number (before or after, with ``*``):

    - ``LAYER:CHANNEL`` a channel, ``LAYER:CHANNEL@X,Y`` a neuron;
    - ``LAYER:{C=V,C=V,...}`` a direction given by its non-zero values (needs `channels`, the
      layer's channel count, e.g. from `describe_model`);
    - ``LAYER:diversity``; ``l1``, ``l2``, ``tv`` the input penalties.

    >>> str(parse("block4_conv3:12 - 0.5*block3_conv3:40"))
    'block4_conv3:12 - 0.5*block3_conv3:40'

    ValueError saying where the text is wrong.
    """
    return _Parser(text, channels).expression()


class _Parser:
    """Recursive descent over the tokens of `text`."""

    def __init__(self, text: str, channels: Callable[[str], int] | None) -> None:
        self.text = text
        self.channels = channels
        self.tokens: list[tuple[str, str, int]] = []  # (kind, text, position)
        for match in _TOKEN.finditer(text):
            if match.group(0).strip() == "":
                continue
            kind = "number" if match[1] else "name" if match[2] else "symbol"
            token = match.group(0).strip()
            self.tokens.append((kind, token, match.end(0) - len(token)))
        self.at = 0

    def error(self, expected: str) -> ValueError:
        if self.at < len(self.tokens):
            _, found, position = self.tokens[self.at]
            where = f"{found!r} at position {position + 1}"
        else:
            where = "the end"
        return ValueError(f"objective {self.text!r}: expected {expected}, found {where}")

    def peek(self, kind: str, text: str | None = None) -> bool:
        if self.at >= len(self.tokens):
            return False
        token_kind, token_text, _ = self.tokens[self.at]
        return token_kind == kind and (text is None or token_text == text)

    def take(self, kind: str, text: str | None = None, expected: str = "") -> str:
        if not self.peek(kind, text):
            raise self.error(expected or text or kind)
        self.at += 1
        return self.tokens[self.at - 1][1]

    def expression(self) -> Objective:
        sign = -1.0 if self.peek("symbol", "-") and self.take("symbol") else 1.0
        result = sign * self.product()
        while self.peek("symbol", "+") or self.peek("symbol", "-"):
            operator = self.take("symbol")
            term = self.product()
            result = result + term if operator == "+" else result - term
        if self.at < len(self.tokens):
            raise self.error("+ or - between terms")
        return result

    def product(self) -> Objective:
        weight = 1.0
        if self.peek("number"):
            weight = self.number()
            self.take("symbol", "*")
        term = self.atom()
        if self.peek("symbol", "*"):
            self.take("symbol", "*")
            weight *= self.number()
        return weight * term

    def integer(self, expected: str) -> int:
        if not self.peek("number") or not self.tokens[self.at][1].isdigit():
            raise self.error(expected)
        return int(self.take("number"))

    def number(self) -> float:
        value = float(self.take("number", expected="a number"))
        if not math.isfinite(value):
            raise self.error("a finite number")
        return value

    def atom(self) -> Objective:
        name = self.take("name", expected="a term such as block4_conv3:12 or l1")
        if name in _PENALTIES and not self.peek("symbol", ":"):
            return _PENALTIES[name]()
        self.take("symbol", ":", expected=f"':' after the layer name {name!r}")
        if self.peek("name", "diversity"):
            self.take("name")
            return diversity(name)
        if self.peek("symbol", "{"):
            return self.direction(name)
        index = self.integer("a channel number, 'diversity' or '{' (a direction)")
        if self.peek("symbol", "@"):
            self.take("symbol")
            x = self.integer("a neuron column")
            self.take("symbol", ",", expected="',' between the neuron's column and row")
            y = self.integer("a neuron row")
            return neuron(name, index, x, y)
        return channel(name, index)

    def direction(self, layer: str) -> Objective:
        self.take("symbol", "{")
        values: dict[int, float] = {}
        while True:
            index = self.integer("a channel number")
            self.take("symbol", "=", expected="'=' between channel and value")
            negative = self.peek("symbol", "-") and bool(self.take("symbol"))
            values[index] = -self.number() if negative else self.number()
            if not self.peek("symbol", ","):
                break
            self.take("symbol")
        self.take("symbol", "}", expected="'}' closing the direction")
        if self.channels is None:
            raise ValueError(f"objective {self.text!r}: a direction needs the layer's channels")
        return direction(layer, dense(values, self.channels(layer)))
