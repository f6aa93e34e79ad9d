"""One schema for every recipe option: the table in `engine.job` (one `option(...)` per field)
drives the presets' checks, the server's validation and DescribeModel; the SDK's option table
and the CLI's flags are held to what the server describes."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from serverproc import ServerProcess
from test_cli import featviz

import featviz as sdk
from featviz.options import OPTIONS, TRANSFORM_TYPES, maximize_request
from featviz_server.config import Settings
from featviz_server.engine import PRESETS, Recipe, Transforms, recipe, schema
from featviz_server.engine.schema import OptionError
from featviz_server.service import validation

LIMITS = {"max_size": 256, "max_steps": 400}  # the test server's (conftest.TEST_SERVER_ARGS)


@pytest.fixture(scope="module")
def description(server: ServerProcess) -> Iterator[sdk.ModelDescription]:
    with sdk.Client(server.target) as client:
        yield client.describe_model()


def test_every_recipe_field_is_in_the_table_once() -> None:
    names = [f.name for f in schema.FIELDS]
    expected = [f.name for f in dataclasses.fields(Recipe) if f.name != "transforms"]
    expected += [f"transforms.{f.name}" for f in dataclasses.fields(Transforms)]
    assert sorted(names) == sorted(expected) and len(set(names)) == len(names)


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"size": 300}, "size", "300 is out of range; allowed: 32..256"),
        ({"steps": 0}, "steps", "0 is out of range; allowed: 1..400"),
        ({"l2": float("inf")}, "l2", "inf is out of range; allowed: 0.0..1000.0"),
        ({"transforms": Transforms(pad=65)}, "transforms.pad", "allowed: 0..64"),  # size / 2
        ({"optimizer": "sgd"}, "optimizer", "'sgd' is not one of adam, normalized_ascent"),
        ({"value_range": "raw"}, "value_range", "'raw' needs the pixel parameterization"),
    ],
)
def test_the_schema_checks_ranges_limits_and_rules(overrides, field, message) -> None:
    with pytest.raises(OptionError) as caught:
        recipe("fast", LIMITS, **overrides)
    assert caught.value.field == field and message in caught.value.description


def test_describe_model_serves_every_field_and_every_presets_full_recipe(
    description: sdk.ModelDescription,
) -> None:
    fields = {f.name: f for f in description.recipe_fields}
    assert list(fields) == [f.name for f in schema.FIELDS]
    assert (fields["size"].minimum, fields["size"].maximum) == (32, 256)  # the server's limit
    assert (fields["steps"].minimum, fields["steps"].maximum) == (1, 400)
    assert fields["transforms.pad"].maximum == 128 and "size" not in fields["l1"].constraint
    assert fields["optimizer"].choices == ("adam", "normalized_ascent")
    assert fields["learning_rate"].request_field == "options.learning_rate"
    assert fields["display"].request_field == ""  # set by presets only
    assert all(f.help for f in fields.values())
    assert fields["l1"].help == "weight of the L1 penalty on the centred image"  # the proto's
    assert description.default_preset == "fast"
    assert description.limits is not None and description.limits.max_images_per_channel == 8
    for preset in description.presets:
        engine_recipe = PRESETS[preset.name]
        assert preset.values == {
            f.name: pytest.approx(schema.value(engine_recipe, f.name))
            if f.type == "float"
            else schema.value(engine_recipe, f.name)
            for f in schema.FIELDS
        }


def test_the_sdk_option_table_matches_the_described_schema(
    description: sdk.ModelDescription,
) -> None:
    """Every field a request can set has its SDK keyword (and CLI flag) at that request field,
    of its type, with its help; and every SDK recipe keyword is a described field."""
    by_path = {option.path: (name, option) for name, option in OPTIONS.items()}
    settable = [f for f in description.recipe_fields if f.request_field]
    for field in settable:
        if field.name.startswith("transforms."):
            assert field.name.partition(".")[2] in TRANSFORM_TYPES
            continue
        name, option = by_path[field.request_field]
        assert option.help == field.help, name
        if field.type == "choice":
            assert option.choices == field.choices, name
        else:
            assert option.type.__name__ == field.type, name
    recipe_paths = {f.request_field for f in settable}
    sdk_recipe_options = {
        option.path for option in OPTIONS.values() if option.path.startswith("options.")
    }
    assert sdk_recipe_options <= recipe_paths | {"options.transforms"}
    assert set(TRANSFORM_TYPES) == {
        f.name.partition(".")[2] for f in settable if f.name.startswith("transforms.")
    }


@pytest.mark.parametrize(
    ("given", "transforms"),
    [
        ({}, None),  # every augmentation off: none at all
        ({"jitter": 4}, dataclasses.replace(schema.IDENTITY_TRANSFORMS, jitter=4)),
        ({"scale_max": 1.5}, dataclasses.replace(schema.IDENTITY_TRANSFORMS, scale_max=1.5)),
    ],
)
def test_the_augmentations_a_client_leaves_unnamed_are_off(
    given: dict[str, float], transforms: Transforms | None
) -> None:
    request = maximize_request("block1_conv2", 0, {"preset": "lucid", "transforms": given})
    assert validation.maximization(request, Settings()).job.recipe.transforms == transforms


def test_the_cli_prints_every_option_with_its_range_and_preset_values(
    server: ServerProcess,
) -> None:
    run = featviz("describe", "--options", target=server.target)
    assert run.returncode == 0, run.stderr
    header, *rows = run.stdout.splitlines()
    assert header.split()[:6] == ["option", "type", "range", "classic", "lucid", "fast"]
    learning_rate = next(row.split() for row in rows if row.startswith("--learning-rate "))
    rates = [f"{PRESETS[name].learning_rate:g}" for name in ("classic", "lucid", "fast")]
    assert learning_rate[:6] == ["--learning-rate", "float", "1e-06..1000", *rates]
    assert any(row.startswith("--steps ") and "1..400" in row for row in rows)
