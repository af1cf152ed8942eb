"""Time framescale.frame_scale and the `sigma` normalisation against the median/MAD recipe they
replace, on frames that do and do not resolve electrons; with ``--presets``, which method
frame_scale takes on 10 frames of each preset (only skipper and damic-m resolve electrons)
(docs/catalogue.md, "One source").

    python benchmarks/bench_framescale.py [--quick] [--presets]
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import time

from napari_ccdseg.framescale import frame_scale
from napari_ccdseg.normalise import normalise
from napari_ccdseg.simulate import SIM_PRESETS, simulate_frame


def _best(call, repeats: int = 2) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small frames only")
    parser.add_argument("--presets", action="store_true", help="method taken on 10 frames of each preset")
    args = parser.parse_args()
    if args.presets:
        for preset, config in SIM_PRESETS.items():
            methods = collections.Counter(frame_scale(simulate_frame(config, seed).image).method for seed in range(10))
            print(f"{preset}: {dict(methods)}", flush=True)
        return
    damic = SIM_PRESETS["damic-m"]
    cases = [("conventional 512²", SIM_PRESETS["conventional"]),
             ("single-sample 512 × 576", SIM_PRESETS["single-sample"]), ("damic-m 320 × 640", damic)]
    if not args.quick:
        cases += [("conventional 4096²", dataclasses.replace(SIM_PRESETS["conventional"], rows=4096, cols=4096)),
                  ("damic-m amplifier 1536 × 6144", dataclasses.replace(damic, rows=1536, cols=6144))]
    frame_scale(simulate_frame(damic, 1).image)  # imports and first calls out of the timing
    print("frame | method | frame_scale s | normalise (frame) s | normalise (robust, as before) s")
    for name, config in cases:
        image = simulate_frame(config, 0).image
        method = frame_scale(image).method
        times = [_best(lambda: frame_scale(image)), _best(lambda: normalise(image, "sigma", scale="frame")),
                 _best(lambda: normalise(image, "sigma", scale="robust"))]
        print(f"{name} | {method} | " + " | ".join(f"{t:.2f}" for t in times), flush=True)


if __name__ == "__main__":
    main()
