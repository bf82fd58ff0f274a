"""Experiment configs for ``python -m experiments.main --config=configs/NAME.py[:ARG]``.

Each config file is loaded by path (absl's ``config_flags``) from the repository root and builds
an ``ml_collections.ConfigDict`` with ``get_config(arg)``; the files import each other and their
shared helpers as this package (``from configs import _common, default``), so the repository
root must be on ``sys.path`` (it is when the runner is started from there).

Configs (module docstrings start with the launch command and the expected runtime):

* ``default.py``: the base config every other config starts from; it defines every field the
  runner reads (the defaults live here, not in the library). ``:quick``.
* ``toy.py``: the KAN paper's toy grid extension 3 -> 50 (L-BFGS, float64). ``:quick``.
* ``symbolic.py``: pykan's symbolic pipeline for any formula ``EXPR`` in ``x_1..x_n``
  (``:EXPR``, ``:EXPR,quick``, ``:quick``); it adds the ``symbolic`` section.
* ``hellokan.py``: pykan's hellokan, stage for stage (the symbolic pipeline). ``:quick``.
* ``feynman.py``: an AI Feynman equation through the symbolic pipeline (``:NAME``,
  ``:NAME,quick``, ``:quick``).
* ``special.py``: a scipy.special function with the toy's grid extension (``:NAME``,
  ``:NAME,quick``, ``:quick``).

``_common.py`` holds the helpers the configs share (argument parsing, the ``:quick`` shrink, the
named-dataset ``data`` section); it is not a config (files starting with ``_`` are not).
"""
