"""Fault injection: kill `jemfast train` at random points, resume it, and check that it ends bit-identical.

On a tiny synthetic corpus (``jemfast prepare synthetic --task emotion --n-per-class 4
--n-eval-per-class 2``) and a tiny deterministic CPU recipe (WRN-10-1 without norm, 16 Mel
bands, 32-frame chunks, batch 4, 2 SGLD steps, a buffer of 32, ``OMP_NUM_THREADS=1``,
``train.checkpoint_every`` small), this script

1. trains a reference run to completion (twice, unless ``--no-control``: two uninterrupted
   runs must agree bit for bit, or the comparison below means nothing);
2. ``--kills`` times: starts the same run in a fresh run directory, sends SIGKILL (or, with
   probability ``--sigint``, SIGINT) at a random time (seeded by ``--seed``), then continues
   with ``jemfast train --resume RUN_DIR`` until the run completes; each resume is itself
   killed again with probability ``--again`` (at most ``--max-kills`` kills per trial). A run
   killed before it wrote its config.yaml is started again with the original command, as a
   user would (``--resume`` needs config.yaml). Signal times fall between the reference run's
   first step and its end, or (probability ``--early``) during start-up;
3. checks, for every trial: each process either was killed or exited 0 (a SIGINT exits 130
   with a resumable checkpoint), ``checkpoints/last.pt`` loads after every kill and at the end
   with its checksum verified (``jemfast.train.load_checkpoint``), and the final weights equal
   the reference's exactly (``torch.equal`` per tensor). It also reports, without failing on
   them, whether the optimizer state, the replay buffer and ``best.pt`` match;
4. with ``--sweep``, resumes from a copy of every last.pt an uninterrupted run writes, each to
   completion, with the same checks: deterministic, and every point a SIGKILL can restart from.

It prints a table and appends the run to ``benchmarks/results/<device-slug>/fault_injection.json``
(``--no-write`` skips that). Exit status 0 when every trial passed, 1 otherwise.

    python benchmarks/fault_injection.py --kills 4            # a quick look
    python benchmarks/fault_injection.py                      # 20 trials (about 3.5 minutes on 2 CPU cores)
    python benchmarks/fault_injection.py --sigint 0.3 --again 0.5 --seed 1
    python benchmarks/fault_injection.py --set train.lr=0.05     # a run with divergence rollbacks
    python benchmarks/fault_injection.py --kills 1 --sweep       # resume from every checkpoint, no timing

In the table, events are S (the original command, started afresh) or R (``--resume``), each
``KILL``/``INT`` at a time after the process started, with the step of the last.pt it left.

The child processes import jemfast from this checkout (``PYTHONPATH``), not from wherever it is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import torch

common.ensure_repo_importable()

from jemfast.train import load_checkpoint  # noqa: E402

RESULT_NAME = "fault_injection"
# Exit statuses that a signalled `jemfast train` may end with: killed (-9), Ctrl-C handled by the
# command line (130), Ctrl-C that arrived before the command line was running (-2, Python re-raises it).
KILLED = -signal.SIGKILL
INTERRUPTED = (130, -signal.SIGINT)


def _default_sigint() -> None:
    """In the child: SIGINT back to its default, so the trainer sees Ctrl-C even when this
    script runs in the background of a non-interactive shell (which ignores SIGINT)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def recipe(epochs: int, checkpoint_every: int, method: str, seed: int) -> dict[str, Any]:
    """The tiny CPU recipe of the fault-injection runs (a partial config; the defaults fill the rest)."""
    return {
        "task": {"name": "emotion", "description": "fault injection (benchmarks/fault_injection.py)"},
        "data": {
            "n_mels": 16,
            "chunk_frames": 32,
            "batch_size": 4,
            "eval_batch_size": 4,
            "num_workers": 0,
            "feature_workers": 0,
        },
        "model": {"depth": 10, "width": 1, "norm": None, "dropout": 0.0},
        # No norm layers and energy training: lr 0.005 runs 16 epochs without a divergence rollback (0.01 starts
        # to blow up by epoch 16); --set train.lr=0.05 diverges and rolls back from epoch 4 on.
        "train": {
            "method": method,
            "epochs": epochs,
            "lr": 0.005,
            "warmup_steps": 4,
            "milestones": [max(1, epochs // 2)],
            "device": "cpu",
            "seed": seed,
            "checkpoint_every": checkpoint_every,
        },
        "sampling": {"n_steps": 2, "buffer_size": 32},
    }


class Runner:
    """Starts `jemfast` commands of this checkout with a deterministic single-thread environment."""

    def __init__(self, work: Path, timeout: float):
        self.work = work
        self.timeout = timeout
        env = dict(os.environ)
        env["OMP_NUM_THREADS"] = "1"
        env["MKL_NUM_THREADS"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(common.REPO_ROOT), env.get("PYTHONPATH")]))
        env.pop("CUDA_VISIBLE_DEVICES", None)
        self.env = env

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "jemfast", "-q", *map(str, args)]

    def run(self, *args: str, log: Path | None = None) -> subprocess.CompletedProcess:
        """Run a command to completion; raises RuntimeError with its stderr when it fails."""
        done = subprocess.run(
            self.command(*args), env=self.env, capture_output=True, text=True, timeout=self.timeout, cwd=self.work
        )
        if log is not None:
            with open(log, "a", encoding="utf-8") as handle:
                handle.write(
                    f"$ jemfast {' '.join(map(str, args))}\n{done.stdout}{done.stderr}[exit {done.returncode}]\n"
                )
        if done.returncode != 0:
            raise RuntimeError(f"`jemfast {' '.join(map(str, args))}` exited {done.returncode}:\n{done.stderr[-3000:]}")
        return done

    def _spawn(self, args: list[str], log_handle) -> subprocess.Popen:
        """Start ``jemfast *args`` with output to the log and SIGINT at its default."""
        return subprocess.Popen(
            self.command(*args),
            env=self.env,
            stdout=log_handle,
            stderr=log_handle,
            cwd=self.work,
            preexec_fn=_default_sigint,
        )

    def timed_run(self, args: list[str], watch: Path, log: Path) -> tuple[float, float]:
        """Run a command to completion; returns (seconds until ``watch`` appeared, total seconds)."""
        started = time.perf_counter()
        appeared = None
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(f"$ jemfast {' '.join(map(str, args))}\n")
            handle.flush()
            process = self._spawn(args, handle)
            while process.poll() is None:
                if appeared is None and watch.exists():
                    appeared = time.perf_counter() - started
                if time.perf_counter() - started > self.timeout:
                    process.kill()
                time.sleep(0.02)
            handle.write(f"[exit {process.returncode}]\n")
        total = time.perf_counter() - started
        if process.returncode != 0:
            raise RuntimeError(f"`jemfast {' '.join(map(str, args))}` exited {process.returncode}; see {log}")
        return (appeared if appeared is not None else 0.0), total

    def run_and_signal(self, args: list[str], kill_at: float | None, sig: int, log: Path) -> dict[str, Any]:
        """Start a command, send ``sig`` after ``kill_at`` seconds (None: never), wait for it to end."""
        started = time.perf_counter()
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(
                f"$ jemfast {' '.join(map(str, args))}"
                f"{'' if kill_at is None else f'  # {signal.Signals(sig).name} at {kill_at:.2f} s'}\n"
            )
            handle.flush()
            process = self._spawn(args, handle)
            signalled = False
            try:
                process.wait(timeout=kill_at if kill_at is not None else self.timeout)
            except subprocess.TimeoutExpired:
                if kill_at is None:
                    process.kill()
                    process.wait()
                    raise RuntimeError(f"`jemfast {' '.join(args)}` ran past --timeout {self.timeout} s") from None
                if process.poll() is None:
                    process.send_signal(sig)
                    signalled = True
                try:
                    process.wait(timeout=self.timeout)
                except subprocess.TimeoutExpired:  # a SIGINT that was not honoured
                    process.kill()
                    process.wait()
            handle.write(f"[exit {process.returncode}]\n")
        return {
            "signal": signal.Signals(sig).name if signalled else None,
            "at_s": round(kill_at, 3) if signalled else None,
            "rc": process.returncode,
            "wall_s": round(time.perf_counter() - started, 2),
        }


def checkpoint_summary(path: Path) -> dict[str, Any]:
    """Step and epoch of a checkpoint, loaded with its checksum verified; ``error`` when that fails."""
    if not path.is_file():
        return {"exists": False}
    try:
        state = load_checkpoint(path)
    except Exception as exc:  # noqa: BLE001 - any failure to load is the finding
        return {"exists": True, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {
        "exists": True,
        "ok": True,
        "step": int(state["step"]),
        "epoch": int(state["epoch"]),
        "rollbacks": int(state["rollbacks"]),
    }


def compare(run: Path, reference: Path) -> dict[str, Any]:
    """Exact comparison of a finished run's checkpoints with the reference run's."""
    out: dict[str, Any] = {}
    try:
        state = load_checkpoint(run / "checkpoints" / "last.pt")
        ref = load_checkpoint(reference / "checkpoints" / "last.pt")
    except Exception as exc:  # noqa: BLE001
        return {"last_ok": False, "error": f"{type(exc).__name__}: {exc}", "weights_identical": False}
    out["last_ok"] = True
    out["step"], out["epoch"] = int(state["step"]), int(state["epoch"])
    model, ref_model = state["model"], ref["model"]
    differing = sorted(k for k in ref_model if k not in model or not torch.equal(model[k], ref_model[k]))
    out["weights_identical"] = set(model) == set(ref_model) and not differing
    if differing:
        out["differing_tensors"] = differing[:10]
        out["max_abs_diff"] = max(
            float((model[k].double() - ref_model[k].double()).abs().max()) for k in differing if k in model
        )
    out["optimizer_identical"] = _tree_equal(state["optimizer"], ref["optimizer"])
    out["buffer_identical"] = _tree_equal(state["ranks"][0]["sampler"], ref["ranks"][0]["sampler"])
    best, ref_best = run / "checkpoints" / "best.pt", reference / "checkpoints" / "best.pt"
    if best.is_file() and ref_best.is_file():
        a, b = load_checkpoint(best), load_checkpoint(ref_best)
        out["best_identical"] = _tree_equal(a["model"], b["model"]) and int(a["step"]) == int(b["step"])
    else:
        out["best_identical"] = best.is_file() == ref_best.is_file()
    return out


def _tree_equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and torch.equal(a, b)
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_tree_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_tree_equal(x, y) for x, y in zip(a, b, strict=False))
    return a == b


def kill_time(rng: random.Random, args: argparse.Namespace, window: list[float]) -> float:
    """A random time to signal a process: mostly while it trains, sometimes while it starts up.

    ``window`` is (earliest, training starts, latest) in seconds after the start, from the reference run.
    """
    earliest, training, latest = window
    if rng.random() < args.early or training <= earliest:
        return rng.uniform(earliest, max(training, earliest + 0.1))
    return rng.uniform(training, latest)


def trial(
    index: int,
    runner: Runner,
    args: argparse.Namespace,
    rng: random.Random,
    fresh: list[str],
    reference: Path,
    window: list[float],
) -> dict[str, Any]:
    """One run killed at random points and resumed until it completes; returns its record.

    A first process that completes before its signal (the machine ran faster than the reference
    run) is discarded, ``window``'s latest time shrunk to what it took, and the run started over.
    """
    run_dir = runner.work / "trials" / f"t{index:02d}"
    log = runner.work / "trials" / f"t{index:02d}.log"
    started = time.perf_counter()
    events: list[dict[str, Any]] = []
    problems: list[str] = []
    kills = 0
    discarded = 0
    while True:
        if len(events) > args.max_kills + 5:
            problems.append("did not complete after repeated resumes")
            break
        kill = kills == 0 or (kills < args.max_kills and rng.random() < args.again)
        kill_at = kill_time(rng, args, window) if kill else None
        sig = signal.SIGINT if kill and rng.random() < args.sigint else signal.SIGKILL
        resume = (run_dir / "config.yaml").is_file()
        command = ["train", "--resume", str(run_dir)] if resume else [*fresh, "--run-dir", str(run_dir)]
        event = runner.run_and_signal(command, kill_at, sig, log)
        event["command"] = "resume" if resume else "start"
        rc = event["rc"]
        if event["signal"] is not None:
            kills += 1
            expected = (KILLED,) if sig == signal.SIGKILL else INTERRUPTED
            if rc not in expected and rc != 0:
                problems.append(f"{event['command']} after {event['signal']} exited {rc}")
            event["last"] = checkpoint_summary(run_dir / "checkpoints" / "last.pt")
            if event["last"].get("ok") is False:
                problems.append(f"last.pt does not load after {event['signal']}: {event['last']['error']}")
            events.append(event)
            if rc == 0:  # it finished just before the signal
                break
            continue
        if kill and kills == 0 and rc == 0 and discarded < 5:  # finished before the first kill: start over
            discarded += 1
            window[2] = max(window[1] + 0.1, min(window[2], 0.9 * event["wall_s"]))
            shutil.rmtree(run_dir)
            continue
        events.append(event)
        if rc != 0:
            problems.append(f"{event['command']} exited {rc} (see {log})")
        break
    result = compare(run_dir, reference) if not problems else {"weights_identical": False}
    if not problems and not result.get("last_ok"):
        problems.append(f"final last.pt does not load: {result.get('error')}")
    if not problems and not result["weights_identical"]:
        problems.append(
            f"final weights differ from the reference in {result.get('differing_tensors')} "
            f"(max abs diff {result.get('max_abs_diff'):.3g})"
        )
    record = {
        "kind": "trial",
        "trial": index,
        "kills": kills,
        "events": events,
        "resumes": sum(e["command"] == "resume" for e in events),
        "restarts": sum(e["command"] == "start" for e in events) - 1,
        "discarded": discarded,
        **result,
        "passed": not problems,
        "problems": problems,
        "wall_s": round(time.perf_counter() - started, 2),
    }
    if not args.keep and not problems:
        shutil.rmtree(run_dir, ignore_errors=True)
    return record


# `python -c` program: the jemfast command line, with a copy of every last.pt it writes kept in the
# folder $JEMFAST_CHECKPOINT_COPIES (for --sweep: every stopping point a kill can resume from).
_COPYING_CLI = """
import os, shutil, sys
from pathlib import Path
from jemfast.cli import main
from jemfast.train import JEMTrainer
folder = Path(os.environ["JEMFAST_CHECKPOINT_COPIES"])
original = JEMTrainer.save_checkpoint
count = 0
def save_and_copy(self, path, gather=True):
    global count
    written = original(self, path, gather)
    if written is not None and Path(path).name == "last.pt":
        count += 1
        name = f"{count:03d}-step{self.step_count:04d}-epoch{self.epoch:03d}-rollbacks{self.rollbacks}.pt"
        shutil.copy(written, folder / name)
    return written
JEMTrainer.save_checkpoint = save_and_copy
sys.exit(main(sys.argv[1:]))
"""


def sweep(runner: Runner, fresh: list[str], reference: Path) -> list[dict[str, Any]]:
    """Resume from every last.pt an uninterrupted run writes; each must end equal to the reference.

    Deterministic where kills are not: a SIGKILL resumes from one of these files, so this covers
    every point a killed run can restart from (not the SIGINT checkpoints, written at any step).
    """
    folder = runner.work / "sweep"
    shutil.rmtree(folder, ignore_errors=True)
    copies = folder / "copies"
    copies.mkdir(parents=True)
    straight = folder / "straight"
    done = subprocess.run(
        [sys.executable, "-c", _COPYING_CLI, "-q", *fresh, "--run-dir", str(straight)],
        env={**runner.env, "JEMFAST_CHECKPOINT_COPIES": str(copies)},
        capture_output=True,
        text=True,
        timeout=runner.timeout,
        cwd=runner.work,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the sweep's straight run exited {done.returncode}:\n{done.stderr[-3000:]}")
    records = []
    for checkpoint in sorted(copies.iterdir()):
        run_dir = folder / "resumed" / checkpoint.stem
        (run_dir / "checkpoints").mkdir(parents=True)
        shutil.copy(straight / "config.yaml", run_dir / "config.yaml")
        shutil.copy(checkpoint, run_dir / "checkpoints" / "last.pt")
        started = time.perf_counter()
        event = runner.run_and_signal(["train", "--resume", str(run_dir)], None, signal.SIGKILL, folder / "sweep.log")
        result = compare(run_dir, reference) if event["rc"] == 0 else {"weights_identical": False}
        problems = [] if event["rc"] == 0 else [f"resume exited {event['rc']} (see {folder / 'sweep.log'})"]
        if not problems and not result["weights_identical"]:
            problems.append(f"final weights differ (max abs diff {result.get('max_abs_diff', 0):.3g})")
        record = {
            "kind": "sweep",
            "checkpoint": checkpoint.name,
            "rc": event["rc"],
            **result,
            "passed": not problems,
            "problems": problems,
            "wall_s": round(time.perf_counter() - started, 2),
        }
        records.append(record)
        status = "passed" if record["passed"] else "FAILED: " + "; ".join(problems)
        print(f"resume from {checkpoint.stem}: {status}", flush=True)
    return records


def describe_events(events: list[dict[str, Any]]) -> str:
    parts = []
    for e in events:
        if e["signal"] is None:
            parts.append(f"{e['command'][0].upper()}:" + ("ok" if e["rc"] == 0 else f"exit {e['rc']}"))
            continue
        last = e.get("last", {})
        where = f"step {last['step']}" if last.get("ok") else ("BAD last.pt" if last.get("exists") else "no last.pt")
        name = "KILL" if e["signal"] == "SIGKILL" else "INT"
        parts.append(f"{e['command'][0].upper()}:{name}@{e['at_s']:.1f}s({where})")
    return " ".join(parts)


def table(records: list[dict[str, Any]]) -> str:
    headers = ("trial", "kills", "resumes", "events", "last.pt", "weights", "optim", "buffer", "best", "wall s")
    rows = []
    for r in records:
        yes = {True: "ok", False: "DIFF", None: "-"}
        rows.append(
            [
                str(r["trial"]),
                str(r["kills"]),
                str(r["resumes"]),
                describe_events(r["events"]),
                "ok" if r.get("last_ok") else "FAIL",
                "identical" if r.get("weights_identical") else "DIFFER",
                yes[r.get("optimizer_identical")],
                yes[r.get("buffer_identical")],
                yes[r.get("best_identical")],
                f"{r['wall_s']:.1f}",
            ]
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=False)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) for row in rows]
    lines.append("events: S = started afresh, R = --resume; KILL/INT@seconds after start (step of last.pt left)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]),
    )
    parser.add_argument("--kills", type=int, default=20, help="trials, each killed at least once (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times and signals (default 0)")
    parser.add_argument(
        "--sigint",
        type=float,
        default=0.0,
        help="probability that a signal is SIGINT (Ctrl-C) instead of SIGKILL (default 0)",
    )
    parser.add_argument(
        "--again", type=float, default=0.3, help="probability that a resume is killed again (default 0.3)"
    )
    parser.add_argument("--max-kills", type=int, default=3, help="most kills in one trial (default 3)")
    parser.add_argument("--epochs", type=int, default=16, help="epochs of the run (6 steps each; default 16)")
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        default=5,
        help="train.checkpoint_every (default 5: checkpoints at every offset of a 6-step epoch)",
    )
    parser.add_argument("--method", default="jem", help="train.method (default jem)")
    parser.add_argument("--run-seed", type=int, default=0, help="train.seed of the runs (default 0)")
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        action="extend",
        metavar="SECTION.KEY=VALUE",
        help="more recipe overrides for every run, e.g. --set train.lr=0.05 (divergence rollbacks)",
    )
    parser.add_argument(
        "--min-kill-s", type=float, default=0.5, help="earliest kill, seconds after a process starts (default 0.5)"
    )
    parser.add_argument(
        "--early",
        type=float,
        default=0.2,
        help="probability that a signal lands during start-up (before the reference run's first "
        "step) rather than during training (default 0.2)",
    )
    parser.add_argument("--work", type=Path, help="work folder (default: a temporary one, removed at the end)")
    parser.add_argument("--keep", action="store_true", help="keep the run directories of passing trials")
    parser.add_argument("--no-control", action="store_true", help="skip the second uninterrupted reference run")
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="also resume from every last.pt an uninterrupted run writes (deterministic: every point a SIGKILL "
        "can restart from) and check each ends bit-identical",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="limit for one jemfast process, seconds")
    parser.add_argument("--no-write", action="store_true", help="do not write the JSON result")
    args = parser.parse_args(argv)
    if args.kills < 1 or args.max_kills < 1 or not all(0 <= p <= 1 for p in (args.sigint, args.again, args.early)):
        parser.error("--kills and --max-kills must be >= 1; --sigint, --again and --early are probabilities")

    started = time.perf_counter()
    temporary = args.work is None
    work = Path(tempfile.mkdtemp(prefix="jemfast-faults-")) if temporary else args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    (work / "trials").mkdir(exist_ok=True)
    runner = Runner(work, args.timeout)
    rng = random.Random(args.seed)
    all_passed = False
    try:
        corpus = work / "corpus"
        if not (corpus / "labels.txt").is_file():
            runner.run(
                "prepare",
                "synthetic",
                "--task",
                "emotion",
                "--n-per-class",
                "4",
                "--n-eval-per-class",
                "2",
                "--out",
                corpus,
            )
        config = work / "recipe.yaml"
        config.write_text(json.dumps(recipe(args.epochs, args.checkpoint_every, args.method, args.run_seed), indent=1))
        fresh = ["train", "-c", str(config), "--data", str(corpus), *(["--set", *args.set] if args.set else [])]
        runner.run("features", "-c", config, "--data", corpus)

        print(f"work folder: {work}")
        reference = work / "reference"
        shutil.rmtree(reference, ignore_errors=True)
        # config.yaml is written once the data, model and sampler are ready, just before the first step.
        startup_s, reference_s = runner.timed_run(
            [*fresh, "--run-dir", str(reference)], reference / "config.yaml", work / "reference.log"
        )
        ref_state = checkpoint_summary(reference / "checkpoints" / "last.pt")
        print(
            f"reference run: {reference_s:.1f} s (training from {startup_s:.1f} s), step {ref_state.get('step')}, "
            f"epoch {ref_state.get('epoch')}, {ref_state.get('rollbacks')} divergence rollback(s)"
        )
        control: dict[str, Any] = {}
        if not args.no_control:
            control_dir = work / "control"
            shutil.rmtree(control_dir, ignore_errors=True)
            runner.run(*fresh, "--run-dir", control_dir, log=work / "control.log")
            control = compare(control_dir, reference)
            same = "identical" if control["weights_identical"] else "DIFFER"
            print(f"control run (uninterrupted again): weights {same}")
        # [earliest, training starts, latest] seconds after a process starts; trial() may shrink latest.
        window = [args.min_kill_s, startup_s, max(startup_s + 0.1, 0.98 * reference_s)]

        records = []
        for index in range(args.kills):
            record = trial(index, runner, args, rng, fresh, reference, window)
            records.append(record)
            status = "passed" if record["passed"] else "FAILED: " + "; ".join(record["problems"])
            print(f"trial {index:2d}: {describe_events(record['events'])} -> {status}", flush=True)

        sweep_records = sweep(runner, fresh, reference) if args.sweep else []
        wall = time.perf_counter() - started
        passed = sum(r["passed"] for r in records)
        sweep_passed = sum(r["passed"] for r in sweep_records)
        control_ok = args.no_control or control.get("weights_identical", False)
        summary = {
            "kind": "summary",
            "trials": len(records),
            "passed": passed,
            "kills": sum(r["kills"] for r in records),
            "sigkills": sum(e["signal"] == "SIGKILL" for r in records for e in r["events"]),
            "sigints": sum(e["signal"] == "SIGINT" for r in records for e in r["events"]),
            "resumes": sum(r["resumes"] for r in records),
            "restarts": sum(r["restarts"] for r in records),
            "discarded": sum(r["discarded"] for r in records),
            "weights_identical": sum(bool(r.get("weights_identical")) for r in records),
            "optimizer_identical": sum(bool(r.get("optimizer_identical")) for r in records),
            "buffer_identical": sum(bool(r.get("buffer_identical")) for r in records),
            "best_identical": sum(bool(r.get("best_identical")) for r in records),
            "control_identical": None if args.no_control else control.get("weights_identical"),
            "sweep": {"checkpoints": len(sweep_records), "passed": sweep_passed} if args.sweep else None,
            "reference": {"wall_s": round(reference_s, 2), "training_from_s": round(startup_s, 2), **ref_state},
            "recipe": recipe(args.epochs, args.checkpoint_every, args.method, args.run_seed),
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "kill_window_s": [round(t, 2) for t in window],
            "wall_s": round(wall, 1),
        }
        print()
        print(table(records))
        print()
        print(
            f"{passed}/{len(records)} trials passed ({summary['kills']} kills: {summary['sigkills']} SIGKILL, "
            f"{summary['sigints']} SIGINT; {summary['resumes']} resumes, {summary['restarts']} restarts); "
            f"final weights bit-identical in {summary['weights_identical']}/{len(records)}; "
            f"control run {'skipped' if args.no_control else 'identical' if control_ok else 'DIFFERS'}; "
            f"wall time {wall:.0f} s"
        )
        if args.sweep:
            print(
                f"sweep: {sweep_passed}/{len(sweep_records)} resumes from the straight run's checkpoints ended "
                "bit-identical to the reference"
            )
        if not args.no_write:
            path = common.write_results(RESULT_NAME, [summary, *records, *sweep_records], device="cpu")
            print(f"wrote {path}")
        all_passed = passed == len(records) and control_ok and sweep_passed == len(sweep_records)
        return 0 if all_passed else 1
    finally:
        if temporary and not args.keep and all_passed:
            shutil.rmtree(work, ignore_errors=True)
        elif temporary:
            print(f"kept the work folder {work} (logs: trials/t*.log)")


if __name__ == "__main__":
    sys.exit(main())
