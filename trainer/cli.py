"""`python -m trainer ...`: build-tiny, run, collect, generate, toy (DESIGN.md "Trainer CLI"),
judge and score (evaluation), check-prompts (a prompt file read as the site imports it).

Exit status: 0 success, 2 bad input (one paragraph naming the file, line or key),
1 internal failure (with the traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from trainer.config import MAX_RESPONSE_TOKENS


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build-tiny", help="build a tiny random-init model + tokenizer offline")
    b.add_argument("--out", required=True, help="output directory")
    b.add_argument("--texts", help="text file (one text a line) to train the tokenizer on")
    b.add_argument("--layers", type=int, default=2)
    b.add_argument("--hidden", type=int, default=64)
    b.add_argument("--heads", type=int, default=4)
    b.add_argument("--vocab", type=int, default=512)
    b.add_argument("--seed", type=int, default=0)

    r = sub.add_parser("run", help="train (GAD or SeqKD) from a YAML config")
    r.add_argument("--config", required=True, help="config YAML file")
    r.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )

    c = sub.add_parser("collect", help="collect teacher answers from an OpenAI-compatible API")
    c.add_argument("--prompts", required=True, help="prompt file (JSONL, CSV, Parquet)")
    c.add_argument("--out", required=True, help="JSONL of answers (flagged ones go beside it)")
    _add_endpoint(
        c,
        base_url="API base, e.g. http://127.0.0.1:8000/v1",
        model=None,
        api_key="environment variable holding the API key",
        cache="answer store (SQLite); default ~/.cache/gad-studio/teacher.sqlite",
    )
    c.add_argument("--max-tokens", type=int, default=MAX_RESPONSE_TOKENS)
    c.add_argument("--temperature", type=float)
    c.add_argument("--top-p", type=float)
    c.add_argument("--seed", type=int, help="sent where the API supports it")
    c.add_argument(
        "--batch",
        action="store_true",
        help="ask through the Batch API (OpenAI: half the price, within 24 h); what it "
        "does not answer is asked online. Interrupted, the same command polls the same batch",
    )
    c.add_argument(
        "--batch-poll", type=float, default=60.0, help="seconds between looks at the batch"
    )

    k = sub.add_parser(
        "check-prompts",
        help="check a prompt file and write its records as normalized JSON lines",
        description="Reads the file as an upload is imported (the same bounds: rows, "
        "cells, lines, what compressed or dictionary-encoded data expands to). Prints a "
        'JSON line {"records": N} every 5,000 records, then {"report": ...}; exit 2 '
        "when the file has problems (listed in the report).",
    )
    k.add_argument("--prompts", required=True, help="prompt file (JSONL, CSV, Parquet)")
    k.add_argument("--out", required=True, help="normalized records (JSONL)")

    g = sub.add_parser("generate", help="answer prompts with a model")
    g.add_argument("--model", required=True)
    g.add_argument("--prompts", required=True)
    g.add_argument("--out", required=True, help="JSONL output")
    g.add_argument("--max-new-tokens", type=int, default=MAX_RESPONSE_TOKENS)
    g.add_argument("--batch-size", type=int, default=16)
    g.add_argument("--seed", type=int, default=0)
    mode = g.add_mutually_exclusive_group()
    mode.add_argument("--temperature", type=float, default=None)
    mode.add_argument("--greedy", action="store_true")

    _add_evaluation(sub)

    t = sub.add_parser("toy", help="the paper's mode-seeking toy experiment (SeqKD vs GAD)")
    t.add_argument("--plot", help="write a PNG of the distributions")
    t.add_argument("--steps", type=int, default=600)
    t.add_argument("--seed", type=int, default=0, help="the seed of the distributions shown")
    t.add_argument(
        "--seeds", type=int, default=20, help="report mode mass and spread over this many seeds"
    )
    return p


def _add_evaluation(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    j = sub.add_parser("judge", help="LLM-judge scores of systems' answers on a test set")
    j.add_argument("--prompts", required=True, help="test prompts (JSONL, CSV, Parquet) with ids")
    j.add_argument(
        "--answers",
        action="append",
        required=True,
        metavar="[NAME=]PATH",
        help="a system's answers (generate output, JSONL with id + response); repeatable",
    )
    _add_endpoint(
        j,
        base_url="judge API base, e.g. https://.../v1",
        model="judge model",
        api_key="environment variable holding the judge's API key",
        cache="answer store (SQLite); default: the teacher cache",
    )
    j.add_argument("--out", help="write the full report (systems and items) as JSON")
    j.add_argument(
        "--max-tokens", type=int, default=MAX_RESPONSE_TOKENS, help="judge's reference answers"
    )
    j.add_argument("--verdict-max-tokens", type=int, default=512)
    j.add_argument("--temperature", type=float, default=0.0, help="judge sampling (0: greedy)")
    j.add_argument(
        "--disagreement", type=float, default=10.0, help="order-disagreement threshold (points)"
    )
    j.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    j.add_argument("--seed", type=int, default=0, help="bootstrap seed")

    s = sub.add_parser("score", help="lengths, n-gram F1, ROUGE-L, distinct-n (no judge)")
    s.add_argument("--answers", action="append", required=True, metavar="[NAME=]PATH")
    s.add_argument("--reference", help="teacher answers (collect output or teacher_response)")
    s.add_argument("--out", help="write the report as JSON")
    s.add_argument("--tokenizer", help="count lengths in this tokenizer's tokens")

    sm = sub.add_parser(
        "sync-mlflow", help="copy an offline MLflow store's runs to MLFLOW_TRACKING_URI"
    )
    sm.add_argument("--store", required=True, help="the offline file store (OUT/mlruns)")
    sm.add_argument("--experiment", required=True, help="the server's experiment to copy into")

    pl = sub.add_parser("plan", help="per-GPU memory of a config, part by part; does it fit?")
    pl.add_argument("--config", required=True)
    pl.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    pl.add_argument("--nodes", type=int, help="default: the config's nodes")
    pl.add_argument("--gpus-per-node", type=int, help="default: the config's gpus_per_node")
    pl.add_argument("--gpu-memory-gb", type=float, default=80.0, help="memory of one GPU")
    pl.add_argument("--json", action="store_true", help="print the plan as JSON")


def _add_endpoint(
    p: argparse.ArgumentParser, *, base_url: str, model: str | None, api_key: str, cache: str
) -> None:
    """The flags of an OpenAI-compatible endpoint and its limits (collect, judge)."""
    p.add_argument("--base-url", required=True, help=base_url)
    p.add_argument("--model", required=True, help=model)
    p.add_argument("--api-key-env", help=api_key)
    p.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    p.add_argument("--max-total-tokens", type=int, help="stop cleanly at this token budget")
    p.add_argument("--rpm", type=float, help="requests-per-minute limit")
    p.add_argument("--tpm", type=float, help="tokens-per-minute limit")
    p.add_argument(
        "--limiter-url",
        help="redis:// URL where the limits are shared with every process naming it "
        "(default: this process only)",
    )
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    p.add_argument("--cache", help=cache)
    # The endpoint's dialect (trainer.teacher.Dialect): OpenAI's reasoning models (GPT-5,
    # o-series) want max_completion_tokens and accept no temperature but their default.
    p.add_argument(
        "--token-param",
        choices=["auto", "max_tokens", "max_completion_tokens"],
        default="auto",
        help="how the answer budget is sent; auto (default): max_tokens, unless the "
        "endpoint's first answer refuses it (GPT-5, the o-series)",
    )
    p.add_argument(
        "--omit-temperature",
        action="store_true",
        help="send no temperature: the model accepts only its default (without it, a "
        "temperature the endpoint refuses is dropped after its first answer says so)",
    )
    p.add_argument(
        "--reasoning-effort", choices=["minimal", "low", "medium", "high"], help="reasoning models"
    )
    p.add_argument("--extra-body", metavar="JSON", help="a vendor's own options, a JSON object")


def _run(args: argparse.Namespace) -> int:
    if args.command == "build-tiny":
        from trainer.tiny import build_tiny

        out = build_tiny(
            args.out, args.texts, args.layers, args.hidden, args.heads, args.vocab, args.seed
        )
        print(f"tiny model written to {out}")
        return 0
    if args.command == "run":
        from trainer import distributed
        from trainer.config import load_config

        distributed.die_with_launcher()  # a torchrun rank: before anything slow

        cfg = load_config(args.config, args.set)
        if cfg.method == "gad":
            from trainer.recipes.gad import run_gad as train
        else:
            from trainer.recipes.seqkd import run_seqkd as train
        try:
            reason = train(cfg)  # one of torchrun's processes joins its group in train
        finally:
            distributed.shutdown()
        print(f"{cfg.method} run {reason}; outputs in {cfg.output_dir}")
        return 0
    if args.command == "sync-mlflow":
        import json

        from trainer.trackers import sync_mlflow

        for run_id in sync_mlflow(args.store, args.experiment):
            print(json.dumps({"run_id": run_id}), flush=True)
        return 0
    if args.command == "collect":
        from trainer.cli_eval import run_collect

        return run_collect(args)
    if args.command == "generate":
        from trainer.generate import generate_file

        n = generate_file(
            args.model,
            args.prompts,
            args.out,
            max_new_tokens=args.max_new_tokens,
            temperature=None if args.greedy else args.temperature,
            batch_size=args.batch_size,
            seed=args.seed,
        )
        print(f"{n} answers written to {args.out}")
        return 0
    if args.command == "judge":
        from trainer.cli_eval import run_judge

        return run_judge(args)
    if args.command == "score":
        from trainer.cli_eval import run_score

        return run_score(args)
    if args.command == "plan":
        return _plan(args)
    if args.command == "check-prompts":
        return _check_prompts(args)
    if args.command == "toy":
        from trainer.toy import main as toy_main

        return toy_main(steps=args.steps, seed=args.seed, plot=args.plot, seeds=args.seeds)
    raise AssertionError(args.command)


def _plan(args: argparse.Namespace) -> int:
    """Exit 0 when the config fits, 3 when it does not (2: bad input)."""
    import json

    from trainer.config import load_config
    from trainer.errors import BadInput
    from trainer.plan import UnknownModel, model_shape, plan

    cfg = load_config(args.config, args.set)
    try:
        # A hub student's config.json: from the cache, or downloaded alone when online.
        shape = model_shape(cfg.student, download=True)
        result = plan(cfg, args.nodes, args.gpus_per_node, args.gpu_memory_gb, shape=shape)
    except UnknownModel as e:
        raise BadInput(str(e)) from e
    print(json.dumps(result.as_dict(), indent=2) if args.json else result.table())
    return 0 if result.fits else 3


def _check_prompts(args: argparse.Namespace) -> int:
    """Exit 0 when the file imports, 2 when it has problems."""
    import json

    from trainer.data import normalize_prompt_file

    def progress(records: int) -> None:
        print(json.dumps({"records": records}), flush=True)

    report, size = normalize_prompt_file(args.prompts, args.out, on_progress=progress)
    found = {
        "records": report.num_records,
        "with_teacher": report.num_with_teacher,
        "stored_bytes": size,
        "problems": [str(p) for p in report.problems],
        "more_problems": report.more_problems,
    }
    print(json.dumps({"report": found}), flush=True)
    return 0 if report.ok else 2


def main(argv: list[str] | None = None) -> int:
    from trainer.errors import BadInput

    args = _parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.command in ("build-tiny", "run", "generate"):  # the others don't load models
        _quiet_libraries()
    try:
        return _run(args)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        print("internal error: the trainer failed; the traceback above says where", file=sys.stderr)
        return 1


def _quiet_libraries() -> None:
    """transformers' own progress bars and advice would drown the run's log lines."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
