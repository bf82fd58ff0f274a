"""The divergence guard's cost: ``loop.fit`` with ``stop_on_nan`` on and off, in one process.

    python scripts/bench_guard.py [--steps 2000] [--chunk-size 50] [--repeats 7]

Trains the toy's KAN [2, 5, 1] (G = 5, L-BFGS, float64, the toy's data) ``--steps`` steps in
chunks of ``--chunk-size``, alternating guard on / off (the same compiled programs: the guard is a
host-side ``np.isfinite`` over each chunk's losses, which the loop fetches anyway). Prints one
JSON line per timed fit and a summary line with the median ratio on / off. Results:
docs/RELIABILITY.md.
"""

import argparse
import json
import statistics
import time

import jax

jax.config.update("jax_enable_x64", True)

from kan_jax.train import loop, make_optimizer  # noqa: E402
from kan_jax.train.config import load_dataset  # noqa: E402
from kan_jax.train.models import make_model  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--chunk-size", type=int, default=50)
    p.add_argument("--repeats", type=int, default=7)
    a = p.parse_args()
    from configs import toy

    c = toy.get_config()
    ds = load_dataset(c)
    model = make_model(c, grid_size=5)
    opt = make_optimizer(c.optimizer, a.steps)

    def once(guard: bool) -> float:
        t0 = time.perf_counter()
        m, hist = loop.fit(model, ds, steps=a.steps, optimizer=opt, chunk_size=a.chunk_size, stop_on_nan=guard)
        jax.block_until_ready(jax.tree_util.tree_leaves(m))
        return time.perf_counter() - t0

    once(True), once(False)  # compile
    times = {True: [], False: []}
    for r in range(a.repeats):
        for guard in ((True, False) if r % 2 == 0 else (False, True)):
            t = once(guard)
            times[guard].append(t)
            print(json.dumps({"guard": guard, "repeat": r, "steps": a.steps, "chunk_size": a.chunk_size, "seconds": t}))
    on, off = statistics.median(times[True]), statistics.median(times[False])
    print(json.dumps({"summary": True, "median_on_s": on, "median_off_s": off, "ratio_on_off": on / off,
                      "steps": a.steps, "chunk_size": a.chunk_size, "repeats": a.repeats}))


if __name__ == "__main__":
    main()
