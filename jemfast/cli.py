"""The ``jemfast`` command line: from a corpus to a calibration report.

Subcommands (``jemfast <command> --help`` for each one's options)::

    prepare    import a corpus (AP17-OLR, CASIA, VoxCeleb age, a Kaldi folder) or
               generate a synthetic one into manifests (train/dev/test.csv, labels.txt)
    config     print a recipe with every value filled in (and --set overrides applied)
    features   build the log-Mel feature caches of a config's data
    train      train one run: --method softmax | jem | jempp | sadajem, a config and
               --set overrides; --resume RUN_DIR continues an interrupted run
    evaluate   a run's predictions and metrics on dev and test (per test subset)
    calibrate  fit temperature and logistic scaling on dev, apply them to test
    report     tables and plots comparing softmax and energy runs, per task
    bench      run the micro-benchmarks of a source checkout (benchmarks/)
    demo       the whole pipeline on a generated corpus, in a few minutes on a CPU

A run is a directory (layout in :mod:`jemfast.pipeline`, which does the work;
this module parses arguments, prints results and turns user errors into exit codes).

User errors (a missing data path, an unknown method, a bad config value) print
one line ``jemfast: error: ...`` and exit with status 1 (2 for malformed
arguments); Ctrl-C during training leaves a resumable checkpoint and exits with 130.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jemfast.pipeline import (
    CHECKPOINT_NAMES,
    _bad_input,
    build_features,
    calibrate_run,
    evaluate_run,
    list_benchmarks,
    load_run_config,
    report_runs,
    run_demo,
    train_run,
)
from jemfast.recipes import (
    METHODS,
    ConfigError,
    RunConfig,
    config_yaml,
    load_config,
    recipe_names,
)

logger = logging.getLogger(__name__)

__all__ = ["main", "build_parser", "entry_point"]

EXIT_USER_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's convention


# ------------------------------------------------------------------ printing
def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with right-aligned numbers."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "-" if math.isnan(value) else f"{value:.3f}" if abs(value) < 10 else f"{value:.2f}"
        return str(value)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) if text else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row, values in zip(text, rows, strict=True):
        cells = [
            t.rjust(w) if isinstance(v, (int, float)) else t.ljust(w)
            for t, v, w in zip(row, values, widths, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _metric_rows(label: str, by_subset: dict[str, dict[str, float]]) -> list[list[Any]]:
    return [[label, subset, m["acc"], m["ece"], m["nll"], m["n"]] for subset, m in by_subset.items()]


METRIC_HEADERS = ("", "subset", "ACC (%)", "ECE (%)", "NLL", "N")


# ------------------------------------------------------------------ commands
def _overrides_from_args(args: argparse.Namespace) -> list[str]:
    """``--set`` values, then the options that stand for a config key (they win over --set)."""
    overrides = list(args.set or [])
    if getattr(args, "data", None):
        overrides.append(f"data.dir={json.dumps(str(args.data))}")
    if getattr(args, "on_error", None):
        overrides.append(f"data.on_error={args.on_error}")
    return overrides


def _config_from_args(args: argparse.Namespace) -> RunConfig:
    return load_config(args.config, _overrides_from_args(args), method=getattr(args, "method", None))


def _require_path(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{what} {path} does not exist")
    return path


def cmd_prepare(args: argparse.Namespace) -> int:
    from jemfast.data import generate_corpus, import_ap17_olr, import_casia, import_kaldi_dir, import_voxceleb_age

    on_error = args.on_error
    with _bad_input(f"prepare {args.source}"):
        if args.source == "synthetic":
            result = generate_corpus(
                args.out,
                args.task,
                n_per_class=args.n_per_class,
                n_eval_per_class=args.n_eval_per_class,
                seed=args.seed,
            )
            print(f"synthetic {args.task} corpus in {result['root']} ({len(result['classes'])} classes)")
            return 0
        if args.source == "ap17-olr":
            report = import_ap17_olr(_require_path(args.root, "data path"), args.out, on_error=on_error)
        elif args.source == "casia":
            report = import_casia(
                _require_path(args.root, "data path"),
                args.out,
                speaker_independent=args.speaker_independent,
                test_speakers=args.test_speakers,
                seed=args.seed,
                on_error=on_error,
            )
        elif args.source == "voxceleb-age":
            if args.age_list:
                lists: Any = _require_path(args.age_list, "age list")
            else:
                if not (args.train_list and args.test_list):
                    raise ConfigError("voxceleb-age needs --age-list, or --train-list and --test-list")
                lists = {
                    "train": _require_path(args.train_list, "age list"),
                    "test": _require_path(args.test_list, "age list"),
                }
                if args.dev_list:
                    lists["dev"] = _require_path(args.dev_list, "age list")
            report = import_voxceleb_age(
                lists, _require_path(args.wav_root, "data path"), args.out, seed=args.seed, on_error=on_error
            )
        else:  # kaldi
            report = import_kaldi_dir(
                _require_path(args.root, "data path"), Path(args.out), subset=args.subset, on_error=on_error
            )
    for split, path in report.manifests.items():
        print(f"{split}: {report.counts[split]} utterances -> {path}")
    if report.labels is not None:
        print(f"labels -> {report.labels}")
    if report.skipped:
        print(
            f"skipped {len(report.skipped)} unreadable file(s); first: {report.skipped[0][0]} ({report.skipped[0][1]})"
        )
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    config = _config_from_args(args)
    print(config_yaml(config, annotate=True), end="")
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    config = _config_from_args(args)
    caches = build_features(config, rebuild=args.rebuild)
    rows = [[split, len(c), c.total_frames, len(c.skipped), str(c.directory)] for split, c in caches.items()]
    print(_table(("split", "utterances", "frames", "skipped", "cache"), rows))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    if args.resume:
        if args.config or args.method or args.data or args.init_from:
            raise ConfigError(
                "--resume takes the run's own config.yaml; use --set to change values, "
                "not --config, --method, --data or --init-from"
            )
        config = load_run_config(args.resume, _overrides_from_args(args))
        run_dir = Path(args.resume)
    else:
        if args.config is None:
            raise ConfigError(
                f"train needs --config (a file or one of {', '.join(recipe_names())}) or --resume RUN_DIR"
            )
        config = _config_from_args(args)
        if args.init_from is not None:
            config = config.updated({"train.init_from": args.init_from})
        run_dir = Path(args.run_dir or Path("runs") / f"{config.task.name}_{config.train.method}")
    train_run(config, run_dir, resume=bool(args.resume))
    print(f"run: {run_dir}")
    print(f"next: jemfast evaluate {run_dir}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    for run in args.runs:
        result = evaluate_run(run, checkpoint=args.checkpoint)
        print(f"{run} ({result['checkpoint']}, epoch {result['epoch']})")
        rows = _metric_rows("dev", result["dev"]) + _metric_rows("test", result["test"])
        print(_table(METRIC_HEADERS, rows))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    for run in args.runs:
        result = calibrate_run(run)
        temperature = result["temperature"].get("temperature")
        print(f"{run}: temperature {temperature:.3f}" if isinstance(temperature, float) else str(run))
        rows = []
        for name, by_subset in result["test"].items():
            rows += _metric_rows(name, by_subset)
        print(_table(("test",) + METRIC_HEADERS[1:], rows))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    result = report_runs(args.runs, args.out, n_bootstrap=args.bootstrap)
    print(Path(result["markdown"]).read_text(encoding="utf-8"))
    print(f"report: {result['markdown']} and {result['json']}; {len(result['plots'])} plots in {args.out}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    scripts = list_benchmarks()
    if args.list:
        for name, path in scripts.items():
            print(f"{name:16s} {path}")
        return 0
    names = args.names or list(scripts)
    unknown = [n for n in names if n not in scripts]
    if unknown:
        raise ConfigError(f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(scripts)}")
    extra = shlex.split(args.args or "")
    failed = []
    for name in names:
        logger.info("running benchmark %s", name)
        completed = subprocess.run([sys.executable, str(scripts[name]), *extra], cwd=scripts[name].parent.parent)
        if completed.returncode != 0:
            failed.append(f"{name} (exit status {completed.returncode})")
    if failed:  # not a user error: the benchmarks' own output says what went wrong
        print(f"jemfast: error: benchmark(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    overrides = list(args.set or [])
    if args.device:
        overrides.append(f"train.device={args.device}")
    out = Path(args.out)
    try:
        result = run_demo(out, overrides, n_per_class=args.n_per_class, n_eval_per_class=args.n_eval_per_class)
    except KeyboardInterrupt as exc:
        exc.resume_hint = f"run `jemfast demo --out {out}` again to continue where it stopped"
        raise
    report = result["report"]
    print(Path(report["markdown"]).read_text(encoding="utf-8"))
    rows = []
    for method, cal in result["calibration"].items():
        for name in ("uncalibrated", "temperature", "logistic"):
            m = cal["test"][name]["all"]
            rows.append([method, name, m["acc"], m["ece"], m["nll"], m["n"]])
    print(_table(("model", "calibration", "ACC (%)", "ECE (%)", "NLL", "N"), rows))
    print()
    print(f"corpus:  {result['corpus']}")
    for method, run in result["runs"].items():
        print(f"{method + ' run:':9s}{run}")
    print(f"report:  {report['markdown']}")
    print(f"plots:   {', '.join(str(p) for p in report['plots'] if p.suffix == '.png')}")
    return 0


# ------------------------------------------------------------------ parser
class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump) and exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _add_config_options(parser: argparse.ArgumentParser, config_required: bool = False) -> None:
    parser.add_argument(
        "-c",
        "--config",
        required=config_required,
        help=f"recipe file or packaged recipe name ({', '.join(recipe_names())})",
    )
    parser.add_argument("--data", help="data folder (train.csv, dev.csv, test.csv, labels.txt); sets data.dir")
    parser.add_argument(
        "--set",
        nargs="+",
        metavar="SECTION.KEY=VALUE",
        action="extend",
        help="override config values, e.g. --set train.epochs=3 model.width=2",
    )
    parser.add_argument(
        "--on-error",
        choices=("raise", "skip"),
        help="an unusable audio file while building features: stop naming it (raise) or leave it "
        "out with a warning (skip); sets data.on_error (default: the config's, raise)",
    )


def _add_prepare_parser(commands: argparse._SubParsersAction) -> None:
    """Arguments of ``jemfast prepare SOURCE``: one sub-parser per corpus source."""
    prepare = commands.add_parser("prepare", help="import a corpus (or generate one) into manifests")
    sources = prepare.add_subparsers(dest="source", metavar="SOURCE", required=True)
    for name, text in (
        ("synthetic", "generate the synthetic corpus"),
        ("ap17-olr", "AP17-OLR Kaldi folders"),
        ("casia", "CASIA <speaker>/<emotion>/*.wav"),
        ("voxceleb-age", "VoxCeleb-Enrichment ages"),
        ("kaldi", "one Kaldi data folder into one manifest"),
    ):
        sub = sources.add_parser(name, help=text)
        sub.add_argument("--out", required=True, help="output folder (a manifest path for kaldi)")
        sub.add_argument("--seed", type=int, default=0)
        sub.add_argument(
            "--on-error",
            choices=("raise", "skip"),
            default="raise",
            help="stop at an unreadable audio file, or skip and count it",
        )
        sub.set_defaults(func=cmd_prepare)
        if name == "synthetic":
            from jemfast.data import TASKS

            sub.add_argument("--task", choices=TASKS, default="emotion")
            sub.add_argument("--n-per-class", type=int, default=50)
            sub.add_argument("--n-eval-per-class", type=int, default=None)
        elif name == "voxceleb-age":
            sub.add_argument("wav_root", help="folder of <VoxCeleb_ID>/<video_id>/*.wav")
            sub.add_argument("--age-list", help="one age list, split by speaker")
            sub.add_argument("--train-list")
            sub.add_argument("--dev-list")
            sub.add_argument("--test-list")
        else:
            sub.add_argument("root", help="corpus folder")
            if name == "casia":
                sub.add_argument("--speaker-independent", action="store_true")
                sub.add_argument("--test-speakers", nargs="+")
            if name == "kaldi":
                sub.add_argument("--subset", default="", help="subset name for every row (e.g. 3s)")


def _add_config_parser(commands: argparse._SubParsersAction) -> None:
    """Arguments of ``jemfast config``: a recipe, a method and overrides."""
    config = commands.add_parser("config", help="print a recipe with every value filled in")
    config.add_argument("config", metavar="RECIPE", help=f"recipe file or packaged name ({', '.join(recipe_names())})")
    config.add_argument(
        "--set",
        nargs="+",
        metavar="SECTION.KEY=VALUE",
        action="extend",
        help="override config values, e.g. --set train.epochs=3 model.width=2",
    )
    config.add_argument("--method", help=f"one of {', '.join(METHODS)} (default: the config's train.method)")
    config.set_defaults(func=cmd_config)


def _add_features_parser(commands: argparse._SubParsersAction) -> None:
    """Arguments of ``jemfast features``: a config and ``--rebuild``."""
    features = commands.add_parser("features", help="build the feature caches of a config's data")
    _add_config_options(features, config_required=True)
    features.add_argument("--rebuild", action="store_true", help="rebuild even when a cache is up to date")
    features.set_defaults(func=cmd_features)


def _add_train_parser(commands: argparse._SubParsersAction) -> None:
    """Arguments of ``jemfast train``: a config plus method, run folder, resume and init-from."""
    train = commands.add_parser("train", help="train a run (or --resume one)")
    _add_config_options(train)
    train.add_argument("--method", help=f"one of {', '.join(METHODS)} (default: the config's train.method)")
    train.add_argument("--run-dir", help="run directory (default: runs/<task>_<method>)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted or finished run")
    train.add_argument(
        "--init-from",
        metavar="RUN_DIR",
        help="start from the weights of a trained run (its best.pt, else last.pt): energy "
        "fine-tuning of an existing classifier (same architecture and classes)",
    )
    train.set_defaults(func=cmd_train)


def _add_evaluate_parser(commands: argparse._SubParsersAction) -> None:
    """Arguments of ``jemfast evaluate``: run folders and the checkpoint to score."""
    evaluate = commands.add_parser("evaluate", help="predictions and metrics of runs on dev and test")
    evaluate.add_argument("runs", nargs="+", metavar="RUN_DIR")
    evaluate.add_argument(
        "--checkpoint",
        choices=CHECKPOINT_NAMES,
        default="best",
        help="best (lowest dev NLL; falls back to last) or last",
    )
    evaluate.set_defaults(func=cmd_evaluate)


def _add_calibrate_parser(commands: argparse._SubParsersAction) -> None:
    """Arguments of ``jemfast calibrate``: run folders."""
    calibrate = commands.add_parser("calibrate", help="temperature and logistic scaling fitted on dev, scored on test")
    calibrate.add_argument("runs", nargs="+", metavar="RUN_DIR")
    calibrate.set_defaults(func=cmd_calibrate)


def _add_report_parser(commands: argparse._SubParsersAction) -> None:
    """Arguments of ``jemfast report``: run folders, output folder and bootstrap resamples."""
    report = commands.add_parser("report", help="tables and plots for softmax and energy runs")
    report.add_argument("runs", nargs="+", metavar="RUN_DIR")
    report.add_argument("--out", default="report", help="output folder (default: ./report)")
    report.add_argument(
        "--bootstrap", type=int, default=0, metavar="N", help="95%% bootstrap intervals of the ECE from N resamples"
    )
    report.set_defaults(func=cmd_report)


def _add_bench_parser(commands: argparse._SubParsersAction) -> None:
    """Arguments of ``jemfast bench``: benchmark names, ``--list`` and extra script arguments."""
    bench = commands.add_parser("bench", help="run the micro-benchmarks (from a source checkout)")
    bench.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    bench.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    bench.add_argument("--args", help="extra arguments for every script, e.g. --args='--no-write'")
    bench.set_defaults(func=cmd_bench)


def _add_demo_parser(commands: argparse._SubParsersAction) -> None:
    """Arguments of ``jemfast demo``: work folder, device, corpus size and recipe overrides."""
    demo = commands.add_parser("demo", help="the whole pipeline on a generated corpus in a few minutes")
    demo.add_argument("--out", default="jemfast_demo", help="work folder (default: ./jemfast_demo)")
    demo.add_argument("--device", help="cpu, cuda, cuda:N (default: auto)")
    demo.add_argument("--n-per-class", type=int, default=50, help="training utterances per class")
    demo.add_argument("--n-eval-per-class", type=int, default=20, help="dev and test utterances per class")
    demo.add_argument(
        "--set",
        nargs="+",
        metavar="SECTION.KEY=VALUE",
        action="extend",
        help="override the demo recipe, e.g. --set train.epochs=2",
    )
    demo.set_defaults(func=cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    """The ``jemfast`` argument parser with all subcommands."""
    from jemfast import __version__

    parser = _Parser(prog="jemfast", description="Fast JEM training and calibration of speech classifiers.")
    parser.add_argument("--version", action="version", version=f"jemfast {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_prepare_parser(commands)
    _add_config_parser(commands)
    _add_features_parser(commands)
    _add_train_parser(commands)
    _add_evaluate_parser(commands)
    _add_calibrate_parser(commands)
    _add_report_parser(commands)
    _add_bench_parser(commands)
    _add_demo_parser(commands)
    return parser


# ------------------------------------------------------------------ entry point
_HANDLER_FLAG = "_jemfast_cli_handler"


def _remove_console_handler() -> None:
    package_logger = logging.getLogger("jemfast")
    for handler in list(package_logger.handlers):
        if getattr(handler, _HANDLER_FLAG, False):
            package_logger.removeHandler(handler)


def _setup_logging(quiet: bool) -> None:
    """INFO (WARNING with --quiet) from the jemfast loggers to stderr, one handler however often main runs."""
    package_logger = logging.getLogger("jemfast")
    _remove_console_handler()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s jemfast: %(message)s", "%H:%M:%S"))
    setattr(handler, _HANDLER_FLAG, True)
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.WARNING if quiet else logging.INFO)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: sys.argv[1:]); returns the exit status.

    0 on success, 1 for a user error, 2 for malformed arguments, 130 after Ctrl-C.
    Unexpected exceptions propagate with their traceback: they are bugs.
    """
    from jemfast.data import AudioError
    from jemfast.train import CheckpointError, DivergenceError

    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    _setup_logging(args.quiet)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as exc:
        hint = getattr(exc, "resume_hint", None)
        print(f"jemfast: interrupted{'; ' + hint if hint else ''}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ConfigError, AudioError, CheckpointError, DivergenceError, FileNotFoundError) as exc:
        print(f"jemfast: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    finally:
        # The handler holds this call's stderr; a later in-process call installs its own.
        _remove_console_handler()


def entry_point() -> None:
    """Console-script entry: exit the process with :func:`main`'s status."""
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
