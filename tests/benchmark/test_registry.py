import pytest

from benchmark.errors import StealBenchError
from benchmark.plugins import ATTACKS, DEFENSES, VICTIMS
from benchmark.registry import Registry


def test_register_and_get():
    reg = Registry("widget")

    @reg.register("alpha")
    class Alpha:
        pass

    assert reg["alpha"] is Alpha
    assert Alpha.name == "alpha"
    assert reg.names() == ["alpha"]
    assert "alpha" in reg and "beta" not in reg


def test_duplicate_name_is_an_error():
    reg = Registry("widget")
    reg.add("alpha", type("A", (), {}))
    with pytest.raises(StealBenchError, match="duplicate widget name 'alpha'"):
        reg.add("alpha", type("B", (), {}))


def test_unknown_name_did_you_mean():
    with pytest.raises(StealBenchError, match="did you mean 'jitter'"):
        DEFENSES["jiter"]
    with pytest.raises(StealBenchError, match="known: "):
        ATTACKS["zzzzzzzz"]


def test_builtin_plugins_are_registered():
    assert {"none", "jitter", "padding", "rounding", "top1"} <= set(DEFENSES.names())
    assert "ours" in ATTACKS.names()
    assert "sdn-tiny" in VICTIMS.names()
