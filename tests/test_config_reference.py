"""docs/configuration.md is the schema's: generated, checked, and naming every key a user can write."""

from __future__ import annotations

from runtime.config import reference, schema


def test_the_reference_is_current() -> None:
    assert reference.main(["--check"]) == 0, "run python -m runtime.config.reference and review the diff"


def test_every_key_of_the_schema_is_in_the_reference() -> None:
    text = reference.render()
    for section, model in (
        ("", schema.RegentFile),
        ("postgresql.", schema.Postgresql),
        ("bootstrap.dcs.", schema.DynamicConfig),
    ):
        for name in model.model_fields:
            assert f"`{section}{name}`" in text
