"""Configuration: defaults, YAML loading and clear errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from churnlens import ConfigError, Settings, load_settings
from churnlens.cli import app

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_shipped_configs_load_and_equal_the_defaults() -> None:
    assert load_settings(ROOT / "configs" / "default.yaml") == Settings()
    cdnow = load_settings(ROOT / "configs" / "cdnow.yaml")
    assert cdnow.training.horizon_days == 91
    assert cdnow.training.snapshot_step_days == 30


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("features: {windowz: [7]}\n", "features.windowz: unknown key; allowed keys here:"),
        (
            "feature: {}\n",
            "feature: unknown key; allowed keys here: drift, engine, events, experiment, features",
        ),
        ("features: {windows_days: [30, 7]}\n", "windows must be strictly increasing"),
        ("training: {horizon_days: -5}\n", "training.horizon_days: Input should be greater than 0"),
        ("segments: {k_min: 5, k_max: 3}\n", "k_max (3) must be at least k_min (5)"),
        ("model: {calibration: magic}\n", "model.calibration: Input should be 'auto'"),
        ("features: {channels: [Web Site]}\n", "lower-case snake_case"),
        ("- just\n- a list\n", "expected a mapping of settings"),
        ("features: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_configs_name_the_field_and_the_fix(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text))
    assert expected in str(info.value)
    assert str(tmp_path) in str(info.value)  # the resolved path is reported


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(Exception, match="frozen"):
        settings.training.horizon_days = 5  # type: ignore[misc]


def test_cli_reports_a_bad_config_with_exit_1(tmp_path: Path) -> None:
    events = tmp_path / "events.csv"
    events.write_text("customer_id,timestamp,channel,event_type\nc1,2024-01-01,web,visit\n")
    config = write(tmp_path, "training: {horizon_days: 0}\n")
    result = CliRunner().invoke(app, ["validate", str(events), "--config", str(config)])
    assert result.exit_code == 1
    assert "training.horizon_days" in result.output
    assert "Traceback" not in result.output
    missing = CliRunner().invoke(app, ["validate", str(events), "--config", "nope.yaml"])
    assert missing.exit_code == 1
    assert "configuration file not found" in missing.output


def test_yaml_is_read_safely_and_paths_are_resolved(tmp_path: Path) -> None:
    from churnlens.actions import load_policy

    evil = "model: !!python/object/apply:os.system ['echo pwned']\n"
    for load in (load_settings, load_policy):
        with pytest.raises(ConfigError, match="not valid YAML") as info:
            load(write(tmp_path, evil))
        assert str(tmp_path.resolve()) in str(info.value)  # the resolved path is reported


def test_a_yaml_alias_bomb_is_refused_before_it_is_built(tmp_path) -> None:
    """340 bytes, 6 levels of 9 aliases: 9^6 values once expanded."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcde", "bcdef", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(bomb)
    assert "aliases expand to more than 100,000 values" in str(caught.value)
    assert len(str(caught.value)) < 500


def test_a_long_bad_value_is_echoed_shortened(tmp_path) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += ["b: &b [" + ",".join(["*a"] * 9) + "]", "c: &c [" + ",".join(["*b"] * 9) + "]"]
    lines.append("training: {horizon_days: *c}")  # 729 values: allowed, but wrong
    config = tmp_path / "wide.yaml"
    config.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    text = str(caught.value)
    assert "training.horizon_days" in text and "characters)" in text and len(text) < 2_000
