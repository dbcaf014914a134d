"""The catalogue is the one list of metrics; docs/metrics.md is generated from it."""

from pathlib import Path

from agent.metrics.catalogue import catalogue, problems, render_markdown
from agent.model.points import Point

DOCS = Path(__file__).parents[2] / "docs" / "metrics.md"


def test_docs_are_generated_from_the_catalogue():
    assert DOCS.read_text() == render_markdown(), "run: python -m agent.metrics.catalogue > docs/metrics.md"


def test_each_measurement_has_one_tag_set_and_names_follow_the_conventions():
    tags = {}
    for (measurement, field), metric in catalogue().items():
        assert tags.setdefault(measurement, metric.tags) == metric.tags, measurement
        assert measurement.startswith(("tor_", "allium_agent")) and measurement == measurement.lower()
        assert field == field.lower() and " " not in field
        assert metric.type in {"gauge", "boolean", "timestamp"} and metric.description
        if metric.unit == "seconds":
            assert field.endswith("_seconds"), field
        if metric.unit == "bytes":
            assert field.endswith("bytes"), field


def test_problems_name_what_does_not_fit():
    good = Point("tor_network", {}, {"relays": 1.0}, 1)
    assert problems([good]) == []
    found = problems([
        Point("tor_nothing", {}, {"x": 1.0}, 1),
        Point("tor_network", {"flag": "Guard"}, {"relays": 1.0}, 1),
        Point("tor_network", {}, {"colour": 1.0}, 1),
        Point("tor_network", {}, {"relays": "many"}, 1),
        Point("tor_network_flag", {"flag": ""}, {"relays": float("nan")}, 0),
    ])
    assert found == [
        "tor_network.relays: value must be a finite float, got 'many'",
        "tor_network: field colour not in the catalogue",
        "tor_network: tags ['flag'] != catalogued []",
        "tor_network_flag.relays: value must be a finite float, got nan",
        "tor_network_flag: tag flag must be a non-empty string, got ''",
        "tor_network_flag: time must be Unix seconds, got 0",
        "tor_nothing: measurement not in the catalogue",
    ]
