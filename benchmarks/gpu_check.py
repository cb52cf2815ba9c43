"""What runs on a GPU, measured: the toy demo end to end, HF-backend sampling throughput (fp32, bf16), short SFT
runs under the shipped Accelerate configs (DDP, FSDP, DeepSpeed ZeRO-3; one process each), and optionally a
GGUF model on GSM8K test problems and the real-model demo on all of GSM8K (`--gsm8k`). Writes
OUT/gpu-check.json and OUT/gpu-check.md (the README's GPU rows).

    python benchmarks/gpu_check.py --out runs/gpu-check [--gguf SmolLM2.gguf --gsm8k-test test.jsonl] [--gsm8k DIR]

Each step runs as an `rftlab` command with a time limit; a failing step is recorded with its log's tail and
the others go on. `--small` shrinks every step (a smoke test of this script on a CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rftlab.compare import MODELS

DEMO_SMALL = ["--n-train", "200", "--n-valid", "40", "--n-test", "50", "--preset", "tiny", "--pretrain-tokens", "40000",
              "--epochs", "2", "--k", "2", "--eval-k", "2"]  # fmt: skip
CONFIGS = {"ddp": [], "fsdp": [], "deepspeed-zero3": ["--offload_optimizer_device", "none", "--offload_param_device",
                                                       "none"]}  # fmt: skip


def run_step(name: str, argv: list[str], limit: int, work: Path, results: dict[str, Any]) -> bool:
    """Runs one command with a time limit; records exit status, seconds and, on failure, the log's end."""
    log = work / f"{name}.log"
    start = time.perf_counter()
    try:
        with open(log, "w") as handle:
            status = subprocess.run(argv, stdout=handle, stderr=subprocess.STDOUT, timeout=limit).returncode
    except subprocess.TimeoutExpired:
        status = "timeout"
    step = {"status": status, "seconds": round(time.perf_counter() - start, 1)}
    if status != 0:
        text = log.read_text(errors="replace")
        step["log_errors"] = [line for line in text.splitlines() if "error" in line.lower()][:10]
        step["log_tail"] = text[-1500:]
    results["steps"][name] = step
    print(f"{name}: {status} in {step['seconds']} s", flush=True)
    return status == 0


def rftlab(*argv: str) -> list[str]:
    return [sys.executable, "-m", "rftlab", *argv]


def tokens_of(samples: Path, model: str) -> int:
    """Generated tokens in a samples file, counted with the model's own tokenizer."""
    from rftlab.models import load_tokenizer

    tokenizer = load_tokenizer(model)
    responses = [json.loads(line)["response"] for line in samples.read_text().splitlines()]
    return sum(len(ids) for ids in tokenizer(responses, add_special_tokens=False)["input_ids"])


def environment() -> dict[str, Any]:
    import accelerate
    import torch
    import transformers

    return {
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        if torch.cuda.is_available()
        else None,
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "python": sys.version.split()[0],
    }


def demo(work: Path, small: bool, results: dict[str, Any]) -> Path | None:
    folder = work / "demo"
    if not run_step("demo", rftlab("demo", "--out", str(folder), "-q", *(DEMO_SMALL if small else [])), 420, work,
                    results):  # fmt: skip
        return None
    facts = json.loads((folder / "results.json").read_text())
    scores = ("maj1@1", "maj1@k", "pass@k")
    evaluations = {name: {key: facts[name].get(key) for key in scores} for name in MODELS}
    results["demo"] = {"seconds": facts["seconds"], "selected": facts["selection"]["selected"], **evaluations,
                       "verdict": facts["verdict"]}  # fmt: skip
    return folder


def sampling_throughput(folder: Path, work: Path, small: bool, results: dict[str, Any]) -> None:
    """k paths per train question from the demo's SFT model, fp32 and bf16, in big batches."""
    k, batch = ("2", "64") if small else ("8", "4096")
    for dtype in ("float32", "bfloat16"):
        out = work / f"samples-{dtype}.jsonl"
        argv = rftlab("sample", "--model", str(folder / "sft"), "--data", str(folder / "data" / "train.jsonl"),
                      "-k", k, "--batch-size", batch, "--dtype", dtype, "--out", str(out), "-q")  # fmt: skip
        if run_step(f"sample-{dtype}", argv, 240, work, results):
            seconds = results["steps"][f"sample-{dtype}"]["seconds"]
            tokens = tokens_of(out, str(folder / "sft"))
            paths = sum(1 for _ in out.open())
            results["sampling"][dtype] = {
                "k": int(k),
                "batch_rows": int(batch),
                "paths": paths,
                "tokens": tokens,
                "seconds_with_load": seconds,
                "tokens_per_s": round(tokens / seconds),
            }


def accelerate_configs(folder: Path, work: Path, results: dict[str, Any]) -> None:
    """One-process SFT of the demo's base on its RFT data under each shipped Accelerate config."""
    for name, extra in CONFIGS.items():
        out = work / f"sft-{name}"
        argv = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                f"configs/accelerate/{name}.yaml", "--num_processes", "1", *extra, "-m", "rftlab", "sft",
                "--model", str(folder / "base"), "--data", str(folder / "rft.jsonl"), "--epochs", "1",
                "--out", str(out), "-q"]  # fmt: skip
        if run_step(f"sft-{name}", argv, 240, work, results):
            facts = json.loads((out / "rftlab.json").read_text())
            results["training"][name] = {key: facts.get(key) for key in ("steps", "tokens_seen", "train_seconds",
                                                                          "train_loss", "processes")}  # fmt: skip
    compare_weights(work, results)


def compare_weights(work: Path, results: dict[str, Any]) -> None:
    """Largest weight difference of each config's model from the DDP one (same seed and batches)."""
    from transformers import AutoModelForCausalLM

    reference = work / "sft-ddp"
    if not (reference / "rftlab.json").exists():
        return
    base = AutoModelForCausalLM.from_pretrained(reference).state_dict()
    for name in CONFIGS:
        folder = work / f"sft-{name}"
        if name != "ddp" and (folder / "rftlab.json").exists():
            try:
                other = AutoModelForCausalLM.from_pretrained(folder).state_dict()
                diff = max((base[key].float() - other[key].float()).abs().max().item() for key in base)
            except (OSError, KeyError, RuntimeError) as error:  # a config whose saved model does not load
                diff = f"cannot compare: {error}"
            results["training"][name]["max_weight_difference_from_ddp"] = diff


def real_model(gguf: str, test: Path, n: int, work: Path, results: dict[str, Any]) -> None:
    """Greedy maj1@1 of a GGUF chat model on the first n GSM8K test problems, with tokens/s."""
    data = work / "gsm8k-test.jsonl"
    data.write_text("".join(test.read_text().splitlines(keepends=True)[:n]))
    for dtype in ("float32", "bfloat16"):
        out = work / f"gguf-{dtype}" / "eval.json"
        argv = rftlab("eval", "--model", gguf, "--data", str(data), "--out", str(out), "--template", "chat",
                      "--extractor", "flexible", "--batch-size", str(n), "--dtype", dtype, "-q")  # fmt: skip
        if run_step(f"gguf-{dtype}", argv, 240, work, results):
            summary = json.loads(out.read_text())
            seconds = results["steps"][f"gguf-{dtype}"]["seconds"]
            tokens = tokens_of(out.with_suffix(".greedy.jsonl"), gguf)
            results["real_model"][dtype] = {"model": Path(gguf).name, "problems": n, "maj1@1": summary["maj1@1"],
                                            "tokens": tokens, "seconds_with_load": seconds,
                                            "tokens_per_s": round(tokens / seconds)}  # fmt: skip


def real_demo(gguf: str, gsm8k: Path, work: Path, results: dict[str, Any]) -> None:
    """The real-model demo at the paper's scale: all of GSM8K train but 200 validation problems, k=8, the whole
    test set, each model its best checkpoint by greedy validation accuracy."""
    folder = work / "demo-smollm2"
    argv = rftlab("demo", "--preset", "smollm2", "--model", gguf, "--gsm8k", str(gsm8k), "--out", str(folder),
                  "--n-train", "7273", "--n-valid", "200", "--n-test", "0", "--k", "8", "--select", "accuracy",
                  "-q")  # fmt: skip
    if run_step("demo-smollm2", argv, 600, work, results):
        facts = json.loads((folder / "results.json").read_text())
        results["real_model"]["demo"] = {name: facts[name]["maj1@1"] for name in MODELS} | {
            "verdict": facts["verdict"]["status"], "seconds": facts["seconds"]}  # fmt: skip


def markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    lines = [f"GPU check on {env['gpu']} ({env['gpu_memory_gib']} GiB), torch {env['torch']}, "
             f"transformers {env['transformers']}, accelerate {env['accelerate']}", "",
             "| step | status | seconds |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {name} | {step['status']} | {step['seconds']} |" for name, step in results["steps"].items()]
    for section in ("sampling", "training", "real_model"):
        for name, facts in results[section].items():
            lines.append(f"\n{section} {name}: " + ", ".join(f"{k} {v}" for k, v in facts.items()))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/gpu-check"))
    parser.add_argument("--work", type=Path, help="working folder (default OUT/work)")
    parser.add_argument("--small", action="store_true", help="tiny sizes: a smoke test of this script")
    parser.add_argument("--skip", nargs="*", default=[], choices=["demo", "sampling", "training"])
    parser.add_argument("--gguf", help="a GGUF chat model to evaluate on GSM8K")
    parser.add_argument("--gsm8k-test", type=Path, help="GSM8K test.jsonl (with --gguf)")
    parser.add_argument("-n", type=int, default=100, help="GSM8K problems (with --gguf)")
    parser.add_argument("--gsm8k", type=Path, help="GSM8K folder: with --gguf, the real-model demo on all of it")
    args = parser.parse_args()
    work = args.work or args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"environment": environment(), "steps": {}, "sampling": {}, "training": {},
                               "real_model": {}}  # fmt: skip
    folder = None if "demo" in args.skip else demo(work, args.small, results)
    if folder is not None and "sampling" not in args.skip:
        sampling_throughput(folder, work, args.small, results)
    if folder is not None and "training" not in args.skip:
        accelerate_configs(folder, work, results)
    if args.gguf:
        real_model(args.gguf, args.gsm8k_test, args.n, work, results)
    if args.gguf and args.gsm8k:
        real_demo(args.gguf, args.gsm8k, work, results)
    (args.out / "gpu-check.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "gpu-check.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
