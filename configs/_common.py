"""Helpers shared by the config files (not a config itself): argument parsing, ``:quick``, ``data``."""

import ml_collections


def split_options(arg, default_name: str, options: tuple[str, ...] = ("quick",)) -> tuple[str, frozenset]:
    """``"NAME[,OPTION...]"`` -> ``(NAME or default_name, {OPTION, ...})``: trailing ``,OPTION``
    words in ``options`` are taken off the end (a bare ``"quick"`` or ``"paper"`` names no NAME);
    the rest is the name, commas and all (``symbolic.py:EXPR`` may hold commas)."""
    name = (arg or "").strip()
    chosen = set()
    while name:
        head, _, last = name.rpartition(",")
        if last.strip() not in options:
            break
        chosen.add(last.strip())
        name = head.strip()
    return name or default_name, frozenset(chosen)


def split_quick(arg, default_name: str) -> tuple[str, bool]:
    """``"NAME"``, ``"NAME,quick"`` or ``"quick"`` -> ``(NAME or default_name, quick)``."""
    name, chosen = split_options(arg, default_name)
    return name, "quick" in chosen


def options_only(arg, path: str, options: tuple[str, ...]) -> frozenset:
    """The options of a config that takes no name: ``None``/``""`` -> none, ``"quick"``,
    ``"paper,quick"`` ...; anything else is a ``ValueError`` naming the config file ``path``."""
    words = [w.strip() for w in (arg or "").split(",") if w.strip()]
    if any(w not in options for w in words):
        allowed = " or ".join(repr(o) for o in options) + (" (comma-separated)" if len(options) > 1 else "")
        raise ValueError(f"{path} takes no argument or {allowed}, got {arg!r}")
    return frozenset(words)


def quick_only(arg, path: str) -> bool:
    """Whether ``arg`` asks for the quick run: ``None``/``""`` -> False, ``"quick"`` -> True;
    anything else is a ``ValueError`` naming the config file ``path``."""
    return "quick" in options_only(arg, path, ("quick",))


def apply_quick(c):
    """Shrinks a config in place to a few-second smoke run (used by every config's ``:quick``)."""
    c.training.steps = 20
    c.training.grid_update_every = 5
    c.training.stop_grid_update_step = 10
    c.training.log_every = 5
    c.checkpoint_every = 10
    c.data.train_num = 100
    c.data.test_num = 100
    if c.training.grid_sizes:
        c.training.grid_sizes = tuple(c.training.grid_sizes)[:2]
    return c


# The KAN paper's grid-extension schedule (Liu et al. 2024, section 3.1 and Fig. 3.1): the ``paper``
# protocol of toy.py and special.py trains through every one of these grid sizes.
PAPER_GRIDS = (3, 5, 10, 20, 50, 100, 200)


def named_data(kind: str, field: str, name: str) -> ml_collections.ConfigDict:
    """The ``data`` section of a named dataset (``kind`` "feynman" or "special"; ``field`` the
    one naming it, ``equation`` or ``function``): 1000 train / 1000 test points, seed 0."""
    d = ml_collections.ConfigDict()
    d.kind = kind
    d[field] = name
    d.train_num = 1000
    d.test_num = 1000
    d.seed = 0
    d.noise = 0.0  # Gaussian noise on the training targets, relative to their std (test stays clean)
    d.dtype = ml_collections.config_dict.placeholder(str)  # None: follow the config's dtype
    return d


# scikit-learn's bundled classification sets (kan_jax.data.CLASSIFICATION_SETS): features, classes
# and the rows each config holds out for its test split: about a quarter (stratified), leaving a
# training split of a multiple of 8 rows (it splits over the mesh's data axis, up to 8 devices).
CLASSIFICATION = {"digits": (64, 10, 445), "breast_cancer": (30, 2, 137), "wine": (13, 3, 42)}


def classification_data(name: str, *, scale: str) -> ml_collections.ConfigDict:
    """The ``data`` section of a bundled scikit-learn set (``kind`` "sklearn"): a seeded,
    stratified split holding out about a quarter of the rows, ``train_num`` None (all the rest)."""
    if name not in CLASSIFICATION:
        raise ValueError(f"takes one of {sorted(CLASSIFICATION)} (optionally ',quick'), got {name!r}")
    d = ml_collections.ConfigDict()
    d.kind = "sklearn"
    d.name = name
    d.scale = scale  # "symmetric" [-1, 1], "unit" [0, 1], "binary" {0, 1}
    d.train_num = ml_collections.config_dict.placeholder(int)  # None: every row not held out
    d.test_num = CLASSIFICATION[name][2]
    d.seed = 0
    d.dtype = ml_collections.config_dict.placeholder(str)  # None: follow the config's dtype
    return d


def quick_classification_data(d) -> None:
    """``:quick`` sizes for a ``classification_data`` section: at most 100 rows per split."""
    d.test_num = min(100, CLASSIFICATION[d.name][2])
    d.train_num = 100
