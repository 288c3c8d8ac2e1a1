"""Speed targets of the metrics that used to be wall-clock asserts in unit tests (which must not time anything).

    python -m benchmarks.metrics_speed            # bootstrap FID at 2,000 samples × 200 resamples; inception fail-fast
    python -m benchmarks.metrics_speed --quick

* ``bootstrap``: ``graft_core.metrics.frechet.bootstrap_frechet`` on 2,000 32-d features against a 5,000-sample
  reference, 200 resamples (target ≤ 5 s; ~0.5 s on one core);
* ``inception_missing``: ``compute_metrics(..., extractor="inception")`` with no Inception weights configured must
  fail before it extracts anything (target ≤ 5 s).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks import common

NAME = "metrics_speed"
TARGETS_S = {"bootstrap": 5.0, "inception_missing": 5.0}


def cases(quick: bool) -> dict:
    from graft_core.data import load_digits
    from graft_core.metrics import compute_metrics
    from graft_core.metrics.extractors import INCEPTION_WEIGHTS_ENV, InceptionWeightsMissingError
    from graft_core.metrics.frechet import bootstrap_frechet, statistics
    from graft_core.presets import get_preset
    from graft_core.data.decoder import to_uint8

    rng = np.random.default_rng(0)
    ref = statistics(rng.normal(size=(5000, 32)))
    fake = rng.normal(0.3, 1.2, size=(500 if quick else 2000, 32))
    held = to_uint8(load_digits(get_preset("micro").data).heldout_images)
    os.environ.pop(INCEPTION_WEIGHTS_ENV, None)

    def inception_missing():
        try:
            compute_metrics(held, held, extractor="inception", preset=get_preset("paper"))
        except InceptionWeightsMissingError:
            return
        raise AssertionError("compute_metrics did not refuse the missing Inception weights")

    return {"bootstrap": lambda: bootstrap_frechet(fake, ref["mu"], ref["sigma"], num_resamples=200, seed=1),
            "inception_missing": inception_missing}


def main(argv=None) -> int:
    args = common.base_parser(__doc__).parse_args(argv)
    ctx = common.setup(args)
    common.header(ctx, "metrics speed targets")
    timings = common.measure(cases(args.quick), ctx, warmup=1, min_repeats=3, max_repeats=5, log=common.log)
    results = {name: {"median_s": t.median, "times": t.times, **common.target(t.median, TARGETS_S[name], "<=")}
               for name, t in timings.items()}
    table = common.format_table(["case", "median", "target", "met"],
                                [[n, common.fmt_time(r["median_s"]), f"≤ {TARGETS_S[n]:g} s", r["met"]]
                                 for n, r in results.items()])
    print(table)
    path = common.write_result(ctx, NAME, settings={"targets_s": TARGETS_S}, results=results, table=table,
                               summary={"all_met": all(r["met"] for r in results.values())})
    common.footer(ctx, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
