"""The `rftlab` command. Start-up stays light: each command imports its stage when it runs."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from rftlab import __version__

EXIT_BAD_INPUT = 2


def _main_process() -> bool:
    """False in the other ranks of a multi-process launch (torchrun, accelerate launch): they stay quiet."""
    return os.environ.get("RANK", "0") == "0"


def _sample(args: argparse.Namespace) -> int:
    from rftlab.sample import SamplingSettings, run_sampling, shard_path

    settings = SamplingSettings(
        k=args.k,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
        template=_template(args),
        batch_size=_batch_size(args),
    )
    run_sampling(args.model, args.data, args.out, settings, _backend(args), label=args.label, shard=args.shard,
                 show_progress=False if args.quiet or not _main_process() else None)  # fmt: skip
    if args.shard:
        index, shards = args.shard
        print(f"{shard_path(args.out, index, shards)}: shard {index} of {shards}, {args.k} path(s) per problem; "
              f"merge with the same command with --data-parallel-size {shards} instead of --shard")  # fmt: skip
    elif _main_process():
        print(f"{args.out}: {args.k} path(s) per problem")
    return 0


def _batch_size(args: argparse.Namespace) -> int:
    from rftlab.backends.base import REGISTRY

    return args.batch_size or REGISTRY[args.backend].default_batch_size


def _engine(args: argparse.Namespace):
    """The vLLM engine settings of the command line (None with the hf backend, which takes none)."""
    from rftlab.backends.base import ENGINE_OPTIONS, EngineSettings

    given = {name: getattr(args, name) for name in ENGINE_OPTIONS if getattr(args, name) is not None}
    if args.backend != "vllm":
        if given:
            raise ValueError(f"--{next(iter(given)).replace('_', '-')} is an option of --backend vllm")
        return None
    return EngineSettings(**{**given, "stop": tuple(args.stop or ())})


def _backend(args: argparse.Namespace):
    """The backend settings of the command line."""
    from rftlab.backends.base import BackendSettings

    return BackendSettings(args.backend, args.dtype, _engine(args), args.data_parallel_size)


def _shard(text: str) -> tuple[int, int]:
    index, _, shards = text.partition("/")
    if not (index.isdigit() and shards.isdigit() and int(index) < int(shards)):
        raise argparse.ArgumentTypeError(f"{text!r} is not I/N with 0 <= I < N")
    return int(index), int(shards)


def _template(args: argparse.Namespace) -> str:
    """--template, else the template the model was fine-tuned with (rftlab's record), else compact."""
    from rftlab.models import read_metadata

    if args.template:
        return args.template
    return read_metadata(args.model).get("settings", {}).get("recipe", {}).get("template", "compact")


def _add_sampling_options(parser: argparse.ArgumentParser) -> None:
    from rftlab.data import TEMPLATE_CHOICES

    parser.add_argument("--seed", type=int, default=0, help="seed: paths are a function of (seed, problem, index)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1: off)")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="cap on generated tokens (paper: 256)")
    parser.add_argument("--template", choices=TEMPLATE_CHOICES, help="prompt template (chat: the tokenizer's; "
                        "default: the one the checkpoint was fine-tuned with by rftlab, else compact)")  # fmt: skip
    parser.add_argument("--batch-size", type=int, help="rows (prompts x k) per batch (default 256; vllm: 4096)")
    parser.add_argument("--dtype", help="model dtype, e.g. float32, bfloat16 (default float32; vllm: auto)")
    parser.add_argument("--backend", choices=("hf", "vllm"), default="hf", help="sampler: transformers (default) "
                        "or vLLM (GPU; `pip install 'rftlab[vllm]'`)")  # fmt: skip
    parser.add_argument("--data-parallel-size", type=int, default=1, metavar="N", help="worker processes, each "
                        "sampling every N-th batch on GPUs of its own (or a share of the CPU threads); merged into "
                        "the file one process writes (default 1)")  # fmt: skip
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    engine = parser.add_argument_group("vllm backend", "docs/scaling-out.md shows one-node and multi-node runs")
    engine.add_argument("--tensor-parallel-size", type=int, metavar="T", help="GPUs a model is split over (1)")
    engine.add_argument("--pipeline-parallel-size", type=int, metavar="P", help="pipeline stages (1)")
    engine.add_argument("--gpu-memory-utilization", type=float, metavar="F", help="GPU memory share vLLM takes (0.9)")
    engine.add_argument("--max-model-len", type=int, metavar="TOKENS", help="context length (default: the model's)")
    engine.add_argument("--distributed-executor-backend", choices=("mp", "ray"), help="ray: TP/PP across nodes")
    engine.add_argument("--enforce-eager", action="store_true", default=None, help="no CUDA graphs (faster start)")
    stop = "a string that ends a path, left out of it (repeatable; default: none: EOS and the token cap end paths)"
    engine.add_argument("--stop", action="append", metavar="TEXT", help=stop)


def _add_sample(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "sample",
        help="sample k reasoning paths per problem (resumable)",
        description="Sample k reasoning paths per problem. Paths are appended a batch of problems at a time; "
        "rerunning the same command after an interruption continues where it stopped and gives the same file. "
        "With --data-parallel-size N, N worker processes sample every N-th batch each into a shard file "
        "(OUT.shardIofN) and the shards are merged into the file one process writes; under `accelerate launch`, "
        "ranks do the same. --shard I/N samples shard I only and leaves its file (one node each on a shared "
        "filesystem, say); the same command with --data-parallel-size N instead of --shard then merges the "
        "complete shards and samples those missing or unfinished.",
    )
    parser.add_argument("--model", required=True, metavar="CKPT", help="checkpoint folder, hub id or .gguf")
    parser.add_argument("--data", required=True, type=Path, metavar="TRAIN.jsonl", help="problems")
    parser.add_argument("--out", required=True, type=Path, metavar="SAMPLES.jsonl", help="sample file")
    parser.add_argument("-k", type=int, default=1, help="paths per problem (default 1)")
    parser.add_argument("--temperature", type=float, default=0.7, help="0 is greedy (default 0.7, the paper's)")
    parser.add_argument("--label", help="the `model` field of the records (default: the checkpoint's name)")
    parser.add_argument("--shard", type=_shard, metavar="I/N", help="sample shard I of N only (0 <= I < N)")
    _add_sampling_options(parser)
    parser.set_defaults(handler=_sample)


def _eval(args: argparse.Namespace) -> int:
    from rftlab.evaluate import evaluate_model, evaluate_sample_files, summary_table

    if args.samples:
        summary = evaluate_sample_files(args.data, args.samples, args.out, args.extractor, args.k)
    else:
        summary = evaluate_model(
            args.model, args.data, args.out, k=args.k, temperature=args.temperature, seed=args.seed,
            extractor=args.extractor, show_progress=False if args.quiet else None,
            sampling={"top_p": args.top_p, "max_new_tokens": args.max_new_tokens, "template": _template(args),
                      "batch_size": _batch_size(args)},
            shots=args.shots, shots_from=args.shots_from or _train_beside(args.data), backend=_backend(args),
        )  # fmt: skip
    print(summary_table(summary))
    return 0


def _train_beside(test: Path) -> Path | None:
    """train.jsonl in the test file's folder, where toy worlds and GSM8K copies keep it."""
    train = test.parent / "train.jsonl"
    return train if train.is_file() and train != test else None


def _add_eval(commands: argparse._SubParsersAction) -> None:
    from rftlab.answers import DEFAULT_EXTRACTOR, EXTRACTORS

    parser = commands.add_parser(
        "eval",
        help="maj1@1 (greedy), maj1@k and pass@k of a model, or scores of existing samples",
        description="With --model: greedy maj1@1 on the problems and, with -k, maj1@k (majority vote, ties to the "
        "answer seen first) and unbiased pass@k from k samples. With --samples: scores paths that already exist.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", metavar="CKPT", help="checkpoint folder, hub id or .gguf")
    source.add_argument("--samples", nargs="+", type=Path, metavar="SAMPLES.jsonl", help="existing sample files")
    parser.add_argument("--data", required=True, type=Path, metavar="TEST.jsonl", help="problems")
    parser.add_argument("--out", required=True, type=Path, metavar="EVAL.json", help="summary JSON")
    parser.add_argument("-k", type=int, help="samples per problem for maj1@k and pass@k")
    parser.add_argument("--temperature", type=float, default=0.7, help="for the k samples (default 0.7)")
    parser.add_argument("--extractor", choices=sorted(EXTRACTORS), default=DEFAULT_EXTRACTOR, help="answer rule")
    parser.add_argument("--shots", type=int, default=0, help="solved examples before each question (ICL; paper: 8)")
    parser.add_argument("--shots-from", type=Path, metavar="TRAIN.jsonl", help="examples' file (default: train.jsonl "
                        "beside --data); its first N problems are the examples")  # fmt: skip
    _add_sampling_options(parser)
    parser.set_defaults(handler=_eval)


def _demo(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from rftlab.pipeline import DemoConfig, run_demo

    config = DemoConfig(**{f.name: getattr(args, f.name) for f in fields(DemoConfig)})
    results = run_demo(args.out, config, quiet=args.quiet)
    from rftlab.report import demo_table

    print(demo_table(results))
    print("\nstage seconds: " + ", ".join(f"{stage} {seconds:.0f}" for stage, seconds in results["seconds"].items()))
    print(f"report: {args.out / 'report.md'}")
    return 0


def _add_demo(commands: argparse._SubParsersAction) -> None:
    from rftlab.pipeline import DemoConfig

    parser = commands.add_parser(
        "demo",
        help="the whole RFT loop on the toy world, with a report",
        description="Toy world -> pre-train a base -> SFT -> sample k paths per train question -> reject -> RFT "
        "from the base -> evaluate SFT and RFT -> report.md. Every stage is cached under --out: a second run "
        "skips what exists, an interrupted run resumes.",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default runs/demo)")
    defaults = DemoConfig()
    for name, kind, text in (
        ("seed", int, "seed of every stage"), ("n_train", int, "train problems"), ("n_test", int, "test problems"),
        ("preset", str, "model size"), ("pretrain_tokens", int, "pre-training budget"),
        ("sft_tokens", int, "SFT budget (RFT: the same epochs over its data)"),
        ("k", int, "paths sampled per train question"), ("temperature", float, "sampling temperature"),
        ("eval_k", int, "samples per test question for maj1@k and pass@k"),
    ):  # fmt: skip
        default = getattr(defaults, name)
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default, help=f"{text} ({default})")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(handler=_demo)


def _study(args: argparse.Namespace) -> int:
    from rftlab.study import load_config, run_study

    config = load_config(args.config)
    out = args.out or Path("runs") / f"study-{config.name}"
    devices = tuple(args.devices.split(",")) if args.devices else ()
    results = run_study(config, out, cache=args.cache, jobs=args.jobs, devices=devices, dry_run=args.dry_run,
                        quiet=args.quiet)  # fmt: skip
    if results is not None:
        cells = results["cells"]
        print(f"{out / 'report.md'}: {len(results['runs'])} models; {cells['ran']} of {cells['total']} cells run now, "
              f"{cells['seconds'] / 60:.1f} min of compute in all")  # fmt: skip
    return 0


def _add_study(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "study",
        help="a scaling study (data amount, k, pre-training loss and size, unions), resumable, with report",
        description="Runs the grid of a study file (studies/*.yaml): every cell (data, pre-train, subset, SFT, "
        "sample, reject, RFT, eval) is cached under a key of its settings, inputs and code, so a second run "
        "recomputes nothing, an interrupted one resumes, and a changed setting reruns only what depends on it. "
        "Then writes results.json, report.md, report.html and figures.",
    )
    parser.add_argument("config", type=Path, metavar="CONFIG.yaml", help="study file")
    parser.add_argument("--out", type=Path, help="output folder (default runs/study-NAME)")
    parser.add_argument("--cache", type=Path, help="cell cache, shareable between studies (default OUT/cells)")
    parser.add_argument("--jobs", type=int, default=1, help="independent cells run in parallel (default 1)")
    parser.add_argument("--devices", metavar="0,1,...", help="GPUs to share out, one per parallel cell (with --jobs)")
    parser.add_argument("--dry-run", action="store_true", help="list the cells and their commands, run nothing")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    parser.set_defaults(handler=_study)


def _reject(args: argparse.Namespace) -> int:
    from rftlab.data import read_problems, write_json, write_jsonl
    from rftlab.reject import reject, statistics, summary

    problems = read_problems(args.train)
    result = reject(
        problems,
        args.samples,
        dedup=not args.no_dedup,
        extractor=args.extractor,
        first_k=args.first_k,
        show_progress=False if args.quiet else None,
    )
    stats = statistics(result)
    lines = write_jsonl(args.out, result.records())
    if args.stats:
        write_json(args.stats, stats)
    if not args.quiet:
        print(summary(stats))
        print(f"wrote {args.out} ({lines:,} lines)" + (f" and {args.stats}" if args.stats else ""))
    return 0


def _add_reject(commands: argparse._SubParsersAction) -> None:
    from rftlab.answers import DEFAULT_EXTRACTOR, EXTRACTORS

    parser = commands.add_parser(
        "reject",
        help="rejection sampling: keep correct, checked, distinct paths",
        description=(
            "Keep the sampled paths whose answer is right and whose every <<lhs=rhs>> annotation checks; "
            "keep one path per equation list (the farthest by edit distance, the paper's Algorithm 1). "
            "Several sample files are pooled (the union of models) before selection."
        ),
    )
    parser.add_argument("samples", nargs="+", metavar="SAMPLES.jsonl", help="sample files, in sampling order")
    parser.add_argument("--train", required=True, metavar="TRAIN.jsonl", help="the problems that were sampled")
    parser.add_argument("--out", required=True, metavar="RFT.jsonl", help="RFT data: gold, then selected paths")
    parser.add_argument("--stats", metavar="STATS.json", help="also write the statistics as JSON")
    parser.add_argument("--no-dedup", action="store_true", help="keep every correct, checked path")
    parser.add_argument("--first-k", type=int, metavar="K", help="use only the first K paths of each problem per file")
    parser.add_argument(
        "--extractor", choices=sorted(EXTRACTORS), default=DEFAULT_EXTRACTOR, help="final-answer extractor"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary")
    parser.set_defaults(handler=_reject)


def _toyworld(args: argparse.Namespace) -> int:
    from rftlab.toyworld import WorldConfig, write_toyworld

    people = tuple(int(n) for n in args.people.split(","))
    config = WorldConfig(
        people=people,
        cost_share=args.cost_share,
        distractors=args.distractors,
        surface=args.surface,
        canonical=args.canonical,
    )
    summary = write_toyworld(args.out, args.n_train, args.n_test, args.seed, config, args.corpus_docs)
    print(
        f"{args.out}: {summary['train']:,} train and {summary['test']:,} test problems, "
        f"pre-training corpus of {summary['pretrain_docs']:,} documents ({summary['pretrain_chars']:,} characters)"
    )
    return 0


def _add_toyworld(commands: argparse._SubParsersAction) -> None:
    from rftlab.toyworld import DEFAULT_CONFIG, DEFAULT_CORPUS_DOCS, SURFACES

    parser = commands.add_parser(
        "toyworld",
        help="generate a toy-world data set (train, test, pre-training corpus)",
        description="Generate GSM-style problems whose quantities form a small dependency graph, with "
        "calculator-annotated solutions (one randomly drawn strategy each), a test split disjoint by a hash of "
        "each problem, and a pre-training corpus that never contains a train or test question.",
    )
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument("--n-train", type=int, default=4000, help="train problems (default 4000)")
    parser.add_argument("--n-test", type=int, default=500, help="test problems (default 500)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument("--surface", choices=SURFACES, default=DEFAULT_CONFIG.surface, help="text style")
    parser.add_argument("--canonical", action="store_true", help="one fixed solution strategy (no path diversity)")
    parser.add_argument("--people", default=",".join(map(str, DEFAULT_CONFIG.people)), help="mix of people per problem")
    parser.add_argument("--cost-share", type=float, default=DEFAULT_CONFIG.cost_share, help="share of cost questions")
    parser.add_argument("--distractors", type=int, default=DEFAULT_CONFIG.distractors, help="most distractor facts")
    parser.add_argument("--corpus-docs", type=int, default=DEFAULT_CORPUS_DOCS, help="pre-training documents")
    parser.set_defaults(handler=_toyworld)


def _gsm8k(args: argparse.Namespace) -> int:
    from rftlab.gsm8k import load_gsm8k, write_gsm8k

    try:
        records = load_gsm8k(args.source, args.config)
    except (ImportError, OSError) as error:  # datasets missing, or the hub out of reach
        print(f"rftlab gsm8k: error: {error}", file=sys.stderr)
        return 1
    counts = write_gsm8k(args.out, records)
    for split, count in counts.items():
        print(f"{args.out / f'{split}.jsonl'}: {count:,} problems")
    return 0


def _add_gsm8k(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "gsm8k",
        help="write GSM8K's train and test splits as problem files, from the hub or a local copy",
        description="Write OUT/train.jsonl and OUT/test.jsonl (query, response; a problem's id is its 0-based line) "
        "from a hub dataset (needs `pip install 'rftlab[hub]'`), a folder of train.jsonl and test.jsonl "
        "(question/answer or query/response), or a local hub snapshot (CONFIG/train-*.parquet, CONFIG/test-*.parquet). "
        "Both splits are checked before anything is written; each file is written atomically.",
    )
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument("--source", default="openai/gsm8k", help="hub dataset id or local folder (openai/gsm8k)")
    parser.add_argument("--config", default="main", help="dataset config, e.g. main or socratic (main)")
    parser.set_defaults(handler=_gsm8k)


def _recipe_from(args: argparse.Namespace, name: str):
    from rftlab.train import recipe_with

    return recipe_with(
        name,
        learning_rate=args.lr,
        global_batch=args.batch_size,
        device_batch=args.device_batch,
        save_every=args.save_every,
        log_every=args.log_every,
        gradient_checkpointing=args.gradient_checkpointing,
        epochs=args.epochs,
        tokens=args.tokens,
        **{key: getattr(args, key) for key in ("template", "max_length") if key in args},
    )


def _pretrain(args: argparse.Namespace) -> int:
    from rftlab.train import pretrain

    metadata = pretrain(
        args.corpus,
        args.out,
        preset=args.preset,
        recipe=_recipe_from(args, "toy-pretrain"),
        seed=args.seed,
        overwrite=args.overwrite,
        show_progress=False if args.quiet or not _main_process() else None,
    )
    if _main_process():
        print(
            f"{args.out}: {metadata['parameters']:,} parameters, {metadata['tokens_seen']:,} tokens, "
            f"held-out loss {metadata['heldout_loss']:.4f}"
        )
    return 0


def _lora_from(args: argparse.Namespace):
    """LoRA settings from `--lora-*` (None: full fine-tuning); alpha defaults to 2 r."""
    from rftlab.train import Lora

    given = {key: getattr(args, f"lora_{key}") for key in ("alpha", "dropout", "targets")}
    given = {key: value for key, value in given.items() if value is not None}
    if not args.lora_r:
        if given:
            raise ValueError("--lora-alpha, --lora-dropout and --lora-targets need --lora-r")
        return None
    return Lora(r=args.lora_r, **{"alpha": 2.0 * args.lora_r, **given})


def _sft(args: argparse.Namespace) -> int:
    from rftlab.train import default_recipe, sft

    recipe = _recipe_from(args, args.recipe or default_recipe(args.model))
    metadata = sft(
        args.model,
        args.data,
        args.out,
        recipe=recipe,
        seed=args.seed,
        dtype=args.dtype,
        lora=_lora_from(args),
        overwrite=args.overwrite,
        show_progress=False if args.quiet or not _main_process() else None,
    )
    if _main_process():
        print(
            f"{args.out}: {metadata['examples']:,} examples, {metadata['steps']:,} steps, "
            f"{metadata['tokens_seen']:,} tokens, final training loss {metadata['train_loss']:.4f}"
        )
    return 0


def _add_training_options(parser: argparse.ArgumentParser, budget_help: str) -> None:
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--tokens", type=int, help=f"budget in non-padding tokens seen ({budget_help})")
    budget.add_argument("--epochs", type=float, help="budget in passes over the data")
    parser.add_argument("--lr", type=float, help="peak learning rate")
    parser.add_argument("--batch-size", type=int, help="global batch (examples per optimiser step)")
    parser.add_argument("--device-batch", type=int, help="examples per forward pass; the rest is accumulated")
    parser.add_argument("--save-every", type=int, help="optimiser steps between resumable checkpoints")
    parser.add_argument("--log-every", type=int, help="optimiser steps between logged losses")
    parser.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        default=None,
        help="recompute activations in the backward pass: less memory (for 7B+ models), same result; under FSDP, "
        "fsdp_activation_checkpointing in the accelerate config does it without a redundant all-gather",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation and data order (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="train from scratch, replacing what OUT holds")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _add_pretrain(commands: argparse._SubParsersAction) -> None:
    from rftlab.models import DEFAULT_PRESET, PRESETS

    parser = commands.add_parser(
        "pretrain",
        help="train a toy base model from scratch on a corpus",
        description="Train a toy base model (a Llama of the given size, character tokenizer) from scratch; "
        "the held-out loss on the corpus is saved in OUT/rftlab.json. Resumes if interrupted.",
    )
    parser.add_argument("--corpus", required=True, type=Path, help="text, documents separated by blank lines")
    parser.add_argument("--preset", choices=list(PRESETS), default=DEFAULT_PRESET, help="model size")
    parser.add_argument("--out", required=True, type=Path, metavar="CKPT", help="checkpoint folder")
    _add_training_options(parser, "toy default 5M")
    parser.set_defaults(handler=_pretrain)


def _add_sft(commands: argparse._SubParsersAction) -> None:
    from rftlab.data import TEMPLATE_CHOICES
    from rftlab.train import DTYPES, RECIPES

    parser = commands.add_parser(
        "sft",
        help="supervised fine-tuning, loss on the response only",
        description="Fine-tune a model on a problem file (GSM8K-style or RFT data) with the loss on the response "
        "and EOS only. Toy checkpoints default to the toy recipe, other models to the paper's (3 epochs, "
        "global batch 128, lr 2e-5, 3% warm-up, cosine). Resumes if interrupted. With --lora-r, trains LoRA "
        "adapters (PEFT) and saves the base with them merged in, a plain checkpoint, and the adapter in OUT/adapter.",
    )
    parser.add_argument("--model", required=True, metavar="CKPT_OR_HF_ID", help="checkpoint folder, hub id or .gguf")
    parser.add_argument("--data", required=True, type=Path, metavar="TRAIN.jsonl", help="problems or RFT data")
    parser.add_argument("--out", required=True, type=Path, metavar="CKPT", help="checkpoint folder")
    parser.add_argument("--recipe", choices=[r for r in RECIPES if "pretrain" not in r], help="settings to start from")
    parser.add_argument("--template", choices=TEMPLATE_CHOICES, help="prompt template (chat: the tokenizer's)")
    parser.add_argument("--max-length", type=int, help="longest example in tokens")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="weights' dtype (auto: the checkpoint's)")
    lora = parser.add_argument_group("LoRA (needs peft: pip install 'rftlab[lora]')")
    lora.add_argument("--lora-r", type=int, default=0, help="adapter rank (default 0: full fine-tuning)")
    lora.add_argument("--lora-alpha", type=float, help="scale numerator: updates scaled by alpha/r (default 2 r)")
    lora.add_argument("--lora-dropout", type=float, help="dropout on the adapters' input (default 0.05)")
    lora.add_argument("--lora-targets", help="adapted modules: all-linear (default: every linear layer but the "
                      "output head) or names, e.g. q_proj,v_proj")  # fmt: skip
    _add_training_options(parser, "toy default 3M")
    parser.set_defaults(handler=_sft)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rftlab",
        description="Rejection-sampling fine-tuning (RFT) for math word problems, and its scaling studies.",
    )
    parser.add_argument("--version", action="version", version=f"rftlab {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_toyworld(commands)
    _add_gsm8k(commands)
    _add_pretrain(commands)
    _add_sft(commands)
    _add_sample(commands)
    _add_reject(commands)
    _add_eval(commands)
    _add_demo(commands)
    _add_study(commands)
    return parser


def _leave_process_group() -> None:
    """Under torchrun or accelerate launch: every rank waits for the others, then leaves the process group.
    A rank that exits while another still works (rank 0 saving the model) can abort in gloo's teardown."""
    if "torch" not in sys.modules:  # no stage ran torch: nothing to leave
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; exit status 0 on success, 2 on bad input (the message names file and line)."""
    args = build_parser().parse_args(argv)
    from rftlab.data import DataError

    try:
        status = args.handler(args)
        _leave_process_group()
        return status
    except (DataError, FileExistsError, ValueError) as error:
        print(f"rftlab {args.command}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ChildProcessError as error:
        print(f"rftlab {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"rftlab {args.command}: interrupted", file=sys.stderr)
        return 130
