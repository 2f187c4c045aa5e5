import pytest

from benchmark.config import RunConfig, load_config_file
from benchmark.errors import ConfigError
from benchmark.options import build_plugin, parse_kv, plugin_options
from benchmark.plugins import ATTACKS, DEFENSES


def test_options_are_typed():
    jitter = build_plugin(DEFENSES["jitter"], {"size": "2.5", "keyed": "true"}, "defense")
    assert jitter.size == 2.5 and jitter.keyed is True
    assert plugin_options(jitter) == {"size": 2.5, "dist": "uniform", "keyed": True}


@pytest.mark.parametrize("raw, message", [
    ({"siz": "1"}, "did you mean 'size'"),
    ({"size": "big"}, "bad value 'big' for size"),
    ({"size": "-1"}, "size must be >= 0"),
    ({"keyed": "maybe"}, "bad value 'maybe' for keyed"),
    ({"size": "nan"}, "bad value"),
    ({"dist": [1, 2]}, r"bad value \[1, 2\] for dist \(expected str\)"),
    ({"dist": ["x" * 10**6]}, r"^defense 'jitter': bad value \['x{30,40}\.\.\.x{30,40}\.\.\. for dist "
                              r"\(expected str\)$"),
])
def test_bad_options_are_one_line_errors(raw, message):
    with pytest.raises(ConfigError, match=message) as info:
        build_plugin(DEFENSES["jitter"], raw, "defense")
    assert "\n" not in str(info.value)


def test_attack_option_validation():
    with pytest.raises(ConfigError, match="beta <= alpha"):
        build_plugin(ATTACKS["ours"], {"alpha": "0.5", "beta": "0.9"}, "attack")


def test_parse_kv():
    assert parse_kv(["a=1", "b = x"], "attack") == {"a": "1", "b": "x"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_kv(["novalue"], "attack")


def test_config_file_toml_and_yaml(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('attack = "ours"\ndefense = "jitter"\nbudget = 500\n[defense_options]\nsize = 2.0\n')
    cfg = RunConfig.from_dict(load_config_file(toml))
    assert cfg.defense == "jitter" and cfg.budget == 500 and cfg.defense_options == {"size": 2.0}
    yaml = tmp_path / "run.yaml"
    yaml.write_text("defense: padding\nseed: 3\n")
    assert RunConfig.from_dict(load_config_file(yaml)).seed == 3


def test_config_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("attack = [unclosed\n")
    with pytest.raises(ConfigError, match="does not parse"):
        load_config_file(bad)
    with pytest.raises(ConfigError, match="did you mean 'budget'"):
        RunConfig.from_dict({"budjet": 3})
    with pytest.raises(ConfigError, match="wrong type"):
        RunConfig.from_dict({"seed": "zero"})
    with pytest.raises(ConfigError, match="--timing must be one of"):
        RunConfig(timing="psychic")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config_file(tmp_path / "missing.toml")
