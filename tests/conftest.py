"""Test setup: 4 CPU devices, float64 available everywhere (tests opt in per array), fast compiles."""

import os

# 4 CPU devices (tests/test_sharding.py trains on meshes of them), kept alongside any flags the
# environment already sets.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# No persistent compilation cache for in-process runs: a test must not depend on programs another
# run (or the other xdist worker) left in ~/.cache. Tests of the cache, and the fault tests'
# subprocesses, name a fresh directory of their own.
os.environ["KAN_JAX_COMPILATION_CACHE"] = ""

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_default_matmul_precision", "highest")
jax.config.update("jax_disable_most_optimizations", True)


import contextlib  # noqa: E402
import itertools  # noqa: E402
import logging  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import pytest  # noqa: E402

_CONTROL_SIZES = itertools.count(13)  # a new shape for every control compile


class CompileLog:
    """JAX's compile log, captured through ``caplog`` (the ``compile_log`` fixture)."""

    def __init__(self, caplog):
        self.caplog = caplog

    @contextlib.contextmanager
    def capture(self):
        """Logs XLA compiles during the block (earlier records are dropped), then checks that the
        capture works: a fresh control program must show up, so "no compile of X" cannot pass
        because nothing was logged."""
        jax.config.update("jax_log_compiles", True)
        try:
            with self.caplog.at_level(logging.WARNING):
                self.caplog.clear()
                yield self

                def _capture_control(v):
                    return v * 3.0 + 1.0

                jax.jit(_capture_control)(jnp.ones(next(_CONTROL_SIZES)))
        finally:
            jax.config.update("jax_log_compiles", False)
        assert self.compiles("_capture_control"), "compile log not captured"

    def compiles(self, name: str) -> list[str]:
        """The captured compile messages of ``jax.jit`` functions named ``name``."""
        return [r.getMessage() for r in self.caplog.records if f"XLA compilation of jit({name})" in r.getMessage()]


@pytest.fixture
def compile_log(caplog):
    return CompileLog(caplog)
