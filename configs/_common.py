"""Helpers shared by the config files (not a config itself): argument parsing, ``:quick``, ``data``."""

import ml_collections


def split_quick(arg, default_name: str) -> tuple[str, bool]:
    """``"NAME"``, ``"NAME,quick"`` or ``"quick"`` -> ``(NAME or default_name, quick)``."""
    arg = (arg or "").strip()
    quick = arg == "quick" or arg.endswith(",quick")
    name = "" if arg == "quick" else arg[: -len(",quick")] if quick else arg
    return name or default_name, quick


def quick_only(arg, path: str) -> bool:
    """Whether ``arg`` asks for the quick run: ``None``/``""`` -> False, ``"quick"`` -> True;
    anything else is a ``ValueError`` naming the config file ``path``."""
    if arg in (None, ""):
        return False
    if arg == "quick":
        return True
    raise ValueError(f"{path} takes no argument or 'quick', got {arg!r}")


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


def named_data(kind: str, field: str, name: str) -> ml_collections.ConfigDict:
    """The ``data`` section of a named dataset (``kind`` "feynman" or "special"; ``field`` the
    one naming it, ``equation`` or ``function``): 1000 train / 1000 test points, seed 0."""
    d = ml_collections.ConfigDict()
    d.kind = kind
    d[field] = name
    d.train_num = 1000
    d.test_num = 1000
    d.seed = 0
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
