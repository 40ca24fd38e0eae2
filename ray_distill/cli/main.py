"""The `ray-distill` command line.

    ray-distill run CONFIG [key=value ...]       the configured pipeline
    ray-distill <stage> CONFIG [key=value ...]   one stage (see --help)
    ray-distill config show CONFIG [key=value ...]
    ray-distill config reference
    ray-distill models NAME [NAME ...]           resolve (and build) models
    ray-distill benchmarks [CONFIG] [key=value ...]
    ray-distill resources CONFIG [key=value ...]   what each stage's actors reserve (cluster sizing)
    ray-distill chat [CONFIG] [key=value ...] [--model distilled|base|teacher|NAME] [--question Q] [--sag N]
    ray-distill serve-retrieval CONFIG [key=value ...]   the index over HTTP (Search-R1 API)
    ray-distill view RUN_DIR_OR_CONFIG [--host H] [--port P]   a local web app to read a run

User errors (bad config, missing files, unknown names) print one line and
exit with status 2; no traceback. `run` and a stage keep the libraries' own
output in the run's log file (`--verbose`: on the console too; cli/console.py),
and any other error they end with prints its outline and the log file's path
(status 1).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence, TextIO

from ray_distill import __version__
from ray_distill.cli.console import RunFailed
from ray_distill.errors import UserError
from ray_distill.registry import STAGES


def _add_config_args(parser: argparse.ArgumentParser, optional: bool = False) -> None:
    parser.add_argument("config", nargs="?" if optional else None, help="experiment YAML, e.g. experiments/quickstart.yaml")
    parser.add_argument("overrides", nargs="*", help="config overrides as section.key=value")
    # Also accepted after the subcommand; SUPPRESS keeps a top-level -q from being reset.
    parser.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


VERBOSE_HELP = ("also show Ray's, Ray Data's, vLLM's and transformers' own output on the console (a run keeps it "
                "in <run.dir>/logs/ray-distill.log)")


def _add_verbose(parser: argparse.ArgumentParser) -> None:
    # After the subcommand as well; SUPPRESS keeps a top-level -v from being reset.
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ray-distill",
        description="Distill tool-using LLM agents into small models, from one core to a Ray cluster.",
    )
    parser.add_argument("--version", action="version", version=f"ray-distill {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the stages listed in run.stages, skipping finished ones")
    _add_config_args(run)
    run.add_argument("--force", action="store_true", help="rerun finished stages too")
    _add_verbose(run)

    for name, text in STAGES.items():
        p = sub.add_parser(name, help=f"stage: {text}")
        _add_config_args(p)
        p.add_argument("--force", action="store_true", help="rerun even if finished")
        _add_verbose(p)

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
    chat.add_argument("--model", metavar="MODEL",
                      help="who answers: distilled (the run's trained student; the default when it has one), base "
                           "(models.student; the default otherwise), teacher (models.teacher), or a model name or path")
    chat.add_argument("--backend", choices=("hf", "vllm"), help="engine backend for a model (default: hf)")
    chat.add_argument("--sag", type=int, default=1, metavar="N", help="sample N actions per step and vote (SAG)")
    chat.add_argument("--max-steps", type=int, default=5)
    chat.add_argument("--max-new-tokens", type=int, default=512)
    serve = sub.add_parser("serve-retrieval", help="serve the index stage's shards over HTTP (Search-R1 /retrieve API)")
    _add_config_args(serve)
    view = sub.add_parser("view", help="a local web app (read-only) over a run: trajectories, verdicts, "
                                       "training tokens, comparisons")
    view.add_argument("target", metavar="RUN_DIR_OR_CONFIG", help="a run directory, or a config (its run.dir)")
    view.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    view.add_argument("--port", type=int, default=8765)
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
                    args.max_steps, args.max_new_tokens, args.model)

    if args.command == "serve-retrieval":
        from ray_distill.cli.serve_retrieval import serve_retrieval

        return serve_retrieval(load_config(args.config, args.overrides))
    if args.command == "view":
        from ray_distill.cli.view import view

        return view(args.target, args.host, args.port)

    from ray_distill.cli.console import run_console
    from ray_distill.stages.paths import on_this_node
    from ray_distill.stages.pipeline import run_pipeline

    config = on_this_node(load_config(args.config, args.overrides))
    stages = None if args.command == "run" else [args.command]
    command = " ".join([args.command, args.config, *args.overrides])
    with run_console(Path(config.run.dir), command, quiet=args.quiet, verbose=args.verbose) as console:
        run_pipeline(config, stages, force=args.force, progress=not args.quiet, console=console.err)
        _print_report(config, stages, console.out)
        print(f"run directory: {config.run.dir}" + (f" (copied to {config.run.storage})" if config.run.storage else ""),
              file=console.out)
    return 0


def _print_report(config, stages: Optional[list[str]], out: TextIO) -> None:
    """After a pipeline with a report, its tables: what the run found."""
    if "report" not in (config.run.stages if stages is None else stages):
        return
    report = Path(config.run.dir) / "report"
    print((report / "report.md").read_text(), file=out)
    if (report / "accuracy.png").is_file():
        print(f"plot: {report / 'accuracy.png'}", file=out)


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
    if args.command != "run" and args.command not in STAGES:  # a pipeline's console is cli/console.py's
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
        logging.getLogger("ray_distill").setLevel(logging.WARNING if args.quiet else logging.INFO)
    try:
        return _command(args)
    except UserError as e:
        print(f"ray-distill: error: {e}", file=sys.stderr)
        return 2
    except RunFailed as e:
        print(f"ray-distill: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ray-distill: interrupted", file=sys.stderr)
        return 130

