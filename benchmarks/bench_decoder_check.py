"""The cost of the fast decoder's admission check (`decoding.exact_decoder`: allow-list and a one-batch logits
comparison with the model's own forward), on toy presets and, given a file, a real model.

    python benchmarks/bench_decoder_check.py [--gguf SmolLM2-135M-Instruct.Q4_1.gguf]
"""

from __future__ import annotations

import argparse
import time

from rftlab.decoding import exact_decoder
from rftlab.models import char_tokenizer, load_model, new_toy_model


def best_of(model, repeats: int = 5) -> tuple[float, str]:
    """The fastest of `repeats` checks, in milliseconds, and the check's verdict (after one warm-up)."""
    exact_decoder(model)
    times, reason = [], ""
    for _ in range(repeats):
        start = time.perf_counter()
        _, reason = exact_decoder(model)
        times.append(time.perf_counter() - start)
    return 1000 * min(times), reason


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", help="a real model's .gguf file (e.g. SmolLM2-135M's) to check as well")
    args = parser.parse_args()
    tokenizer = char_tokenizer()
    models = {preset: new_toy_model(preset, tokenizer, seed=0).eval() for preset in ("tiny", "m", "xxl")}
    if args.gguf:
        models["gguf"] = load_model(args.gguf, dtype="float32")[0].eval()
    for name, model in models.items():
        milliseconds, reason = best_of(model)
        print(f"{name:5} {milliseconds:8.1f} ms  {reason}")


if __name__ == "__main__":
    main()
