"""The `ray-distill` command line.

    ray-distill run CONFIG [key=value ...]       the configured pipeline
    ray-distill <stage> CONFIG [key=value ...]   one stage (see --help)
    ray-distill config show CONFIG [key=value ...]
    ray-distill config reference
    ray-distill models NAME [NAME ...]           resolve (and build) models
    ray-distill benchmarks [CONFIG] [key=value ...]
    ray-distill resources CONFIG [key=value ...]   what each stage's actors reserve (cluster sizing)
    ray-distill chat [CONFIG] [key=value ...] [--question Q] [--backend hf|vllm] [--sag N]
    ray-distill serve-retrieval CONFIG [key=value ...]   the index over HTTP (Search-R1 API)

User errors (bad config, missing files, unknown names) print one line and
exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from ray_distill import __version__
from ray_distill.errors import UserError
from ray_distill.registry import STAGES


def _add_config_args(parser: argparse.ArgumentParser, optional: bool = False) -> None:
    parser.add_argument("config", nargs="?" if optional else None, help="experiment YAML, e.g. experiments/quickstart.yaml")
    parser.add_argument("overrides", nargs="*", help="config overrides as section.key=value")
    # Also accepted after the subcommand; SUPPRESS keeps a top-level -q from being reset.
    parser.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ray-distill",
        description="Distill tool-using LLM agents into small models, from one core to a Ray cluster.",
    )
    parser.add_argument("--version", action="version", version=f"ray-distill {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the stages listed in run.stages, skipping finished ones")
    _add_config_args(run)
    run.add_argument("--force", action="store_true", help="rerun finished stages too")

    for name, text in STAGES.items():
        p = sub.add_parser(name, help=f"stage: {text}")
        _add_config_args(p)
        p.add_argument("--force", action="store_true", help="rerun even if finished")

    config = sub.add_parser("config", help="inspect configs")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    _add_config_args(config_sub.add_parser("show", help="print the resolved config"))
    config_sub.add_parser("reference", help="print the reference of every config key (Markdown)")

    models = sub.add_parser("models", help="resolve model or embedder names to local files (builds embedded ones)")
    models.add_argument("names", nargs="+", help="model names: embedded, local path or hub id")
    models.add_argument("--embedder", action="store_true", help="resolve the names as sentence embedders")

    bench = sub.add_parser("benchmarks", help="list the paper's benchmarks and the files found for them")
    _add_config_args(bench, optional=True)

    resources = sub.add_parser("resources", help="what each stage's Ray actors and tasks reserve, role by role "
                                                 "(for sizing a cluster's node types)")
    _add_config_args(resources)

    chat = sub.add_parser("chat", help="ask the agent questions and watch Thought / Code / Observation (world corpus)")
    _add_config_args(chat, optional=True)
    chat.add_argument("--question", help="ask this and exit (default: read questions from the terminal)")
    chat.add_argument("--backend", choices=("hf", "vllm"), default="hf", help="engine backend (default: hf)")
    chat.add_argument("--sag", type=int, default=1, metavar="N", help="sample N actions per step and vote (SAG)")
    chat.add_argument("--max-steps", type=int, default=5)
    chat.add_argument("--max-new-tokens", type=int, default=512)
    serve = sub.add_parser("serve-retrieval", help="serve the index stage's shards over HTTP (Search-R1 /retrieve API)")
    _add_config_args(serve)
    return parser


def _split_config(args: argparse.Namespace) -> tuple[Optional[str], list[str]]:
    # argparse puts a lone `key=value` into `config` when CONFIG is optional.
    if args.config is not None and "=" in args.config:
        return None, [args.config, *args.overrides]
    return args.config, list(args.overrides)


def _command(args: argparse.Namespace) -> int:
    # Each command imports what it runs, here and below: `--help` and the small commands stay fast, and a
    # command never pays for Ray, torch or a stage it does not use.
    from ray_distill.config import load_config, to_yaml

    if args.command == "config":
        if args.config_command == "reference":
            from ray_distill.config.reference import reference

            print(reference())
        else:
            print(to_yaml(load_config(args.config, args.overrides)), end="")
        return 0
    if args.command == "models":
        from ray_distill.models import resolve_embedder, resolve_model

        for name in args.names:
            path = resolve_embedder(name).path if args.embedder else resolve_model(name)
            print(f"{name}\t{path}")
        return 0
    if args.command == "benchmarks":
        return _list_benchmarks(*_split_config(args))
    if args.command == "resources":
        from ray_distill.cli.resources import table

        print(table(load_config(args.config, args.overrides)), end="")
        return 0
    if args.command == "chat":
        from ray_distill.cli.chat import chat

        config_path, overrides = _split_config(args)
        return chat(load_config(config_path, overrides), args.question, args.backend, args.sag,
                    args.max_steps, args.max_new_tokens)

    if args.command == "serve-retrieval":
        from ray_distill.cli.serve_retrieval import serve_retrieval

        return serve_retrieval(load_config(args.config, args.overrides))

    from ray_distill.stages.pipeline import run_pipeline

    config = load_config(args.config, args.overrides)
    stages = None if args.command == "run" else [args.command]
    run_pipeline(config, stages, force=args.force, progress=not args.quiet)
    _print_report(config, stages)
    print(f"run directory: {config.run.dir}" + (f" (copied to {config.run.storage})" if config.run.storage else ""))
    return 0


def _print_report(config, stages: Optional[list[str]]) -> None:
    """After a pipeline with a report, its tables: what the run found."""
    if "report" not in (config.run.stages if stages is None else stages):
        return
    report = Path(config.run.dir) / "report"
    print((report / "report.md").read_text())
    if (report / "accuracy.png").is_file():
        print(f"plot: {report / 'accuracy.png'}")


def _list_benchmarks(config_path: Optional[str], overrides: list[str]) -> int:
    from ray_distill.config import load_config
    from ray_distill.data.benchmarks import BENCHMARKS, default_data_dir, find_benchmark

    config = load_config(config_path, overrides)
    data_dir = default_data_dir(config.benchmarks.data_dir)
    print(f"data directory: {data_dir}")
    for name, spec in BENCHMARKS.items():
        try:
            where = str(find_benchmark(name, data_dir, config.benchmarks.files))
        except UserError:
            where = "(not found)"
        print(f"  {name:<18} {spec.domain:<5} {spec.role:<19} {spec.size:>5}  {where}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    # Overrides may follow options (`world CONFIG --force key=value`), which
    # plain parse_args rejects once the positionals are consumed.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(arg.startswith("-") for arg in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides += extra
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("ray_distill").setLevel(logging.WARNING if args.quiet else logging.INFO)
    try:
        return _command(args)
    except UserError as e:
        print(f"ray-distill: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ray-distill: interrupted", file=sys.stderr)
        return 130

