"""The numeric environment: an OpenBLAS core type the CPU cannot execute is dropped, not run."""

from benchmark import environment


def test_an_unrunnable_openblas_core_is_dropped_with_one_line(monkeypatch):
    monkeypatch.setattr(environment, "cpu", lambda: {"model": "x", "machine": "x86_64", "isa": ["avx", "avx2"]})
    said = []
    env = {"OPENBLAS_CORETYPE": "SkylakeX", "OMP_NUM_THREADS": "1"}
    message = environment.drop_unrunnable_blas_core(env, said.append)
    assert env == {"OMP_NUM_THREADS": "1"} and said == [message]
    assert "SkylakeX" in message and "avx512f" in message and "\n" not in message
    for core in ("Haswell", "Zen", "Sandybridge", "Nehalem-unknown"):  # runnable, or not a kernel we know
        env = {"OPENBLAS_CORETYPE": core}
        assert environment.drop_unrunnable_blas_core(env, said.append) is None and env == {"OPENBLAS_CORETYPE": core}


def test_a_cpu_with_the_flag_keeps_the_core_and_unknown_flags_change_nothing(monkeypatch):
    monkeypatch.setattr(environment, "cpu", lambda: {"model": "x", "machine": "x86_64", "isa": ["avx2", "avx512f"]})
    env = {"OPENBLAS_CORETYPE": "SkylakeX"}
    assert environment.drop_unrunnable_blas_core(env, print) is None and env["OPENBLAS_CORETYPE"] == "SkylakeX"
    monkeypatch.setattr(environment, "cpu", lambda: {"model": None, "machine": "x86_64", "isa": []})
    assert environment.drop_unrunnable_blas_core(env, print) is None and env["OPENBLAS_CORETYPE"] == "SkylakeX"
