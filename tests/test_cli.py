"""The jemfast command line, end to end on a tiny generated corpus (each command in seconds)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import jemfast
from jemfast import cli, pipeline
from jemfast.calibration import Predictions
from jemfast.data import generate_corpus, read_labels, read_manifest, write_wav
from jemfast.train import JEMTrainer, load_checkpoint

TINY = {
    "task": {"name": "language"},
    "data": {"chunk_frames": 32, "batch_size": 8, "eval_batch_size": 8, "num_workers": 0, "feature_workers": 0},
    "model": {"depth": 10, "width": 1},
    "train": {"epochs": 1, "lr": 0.05, "warmup_steps": 2, "milestones": [], "device": "cpu"},
    "sampling": {"n_steps": 2, "buffer_size": 64},
}
# The demo recipe cut down to seconds.
TINY_DEMO = [
    "data.chunk_frames=32",
    "data.batch_size=6",
    "train.epochs=1",
    "train.warmup_steps=2",
    "train.device=cpu",
    "sampling.n_steps=2",
    "sampling.buffer_size=64",
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Other test processes share the two cores; a second intra-op thread only adds contention here.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """10 languages, 2 training and 2 dev/test utterances each; test has the 1s/3s/full subsets."""
    root = tmp_path_factory.mktemp("corpus")
    generate_corpus(root, "language", n_per_class=2, train_seconds=(0.5, 1.0))
    return root


@pytest.fixture(scope="module")
def tiny_config(corpus, tmp_path_factory) -> Path:
    config = json.loads(json.dumps(TINY))
    config["data"]["dir"] = str(corpus)
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(err: str, fragment: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith("jemfast") and ": error: " in line]
    assert len(lines) == 1, err
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def trained_runs(tiny_config, tmp_path_factory) -> dict[str, Path]:
    """A softmax and a jem run of the tiny config, trained once for the module."""
    root = tmp_path_factory.mktemp("runs")
    runs = {}
    for method in ("softmax", "jem"):
        runs[method] = root / method
        assert cli.main(["train", "-c", str(tiny_config), "--method", method, "--run-dir", str(runs[method])]) == 0
    return runs


# ------------------------------------------------------------------ prepare, features
def test_prepare_synthetic(tmp_path, capsys):
    code, out, _ = run(capsys, "prepare", "synthetic", "--task", "emotion", "--n-per-class", "1", "--out", tmp_path)
    assert code == 0, out
    assert "6 classes" in out
    assert read_labels(tmp_path / "labels.txt") == ["angry", "fear", "happy", "neutral", "sad", "surprise"]
    assert len(read_manifest(tmp_path / "train.csv")) == 6


def test_prepare_casia_tree(tmp_path, capsys):
    wave = 0.1 * np.sin(np.linspace(0, 400 * np.pi, 8000))
    for speaker in ("liuchanhg", "wangzhe"):
        for emotion in ("angry", "fear", "happy", "normal", "sad", "surprise"):
            for k in range(10):
                write_wav(tmp_path / "CASIA" / speaker / emotion / f"{k:03d}.wav", wave, 16000)
    code, out, err = run(capsys, "prepare", "casia", tmp_path / "CASIA", "--out", tmp_path / "manifests")
    assert code == 0, err
    counts = {split: len(read_manifest(tmp_path / "manifests" / f"{split}.csv")) for split in ("train", "dev", "test")}
    assert sum(counts.values()) == 120 and counts["test"] > 0 and counts["dev"] > 0
    assert "neutral" in read_labels(tmp_path / "manifests" / "labels.txt")
    assert "train: " in out


def test_prepare_missing_data_path(tmp_path, capsys):
    code, _, err = run(capsys, "prepare", "ap17-olr", tmp_path / "nowhere", "--out", tmp_path / "out")
    assert code == 1
    assert_one_line_error(err, f"data path {tmp_path / 'nowhere'} does not exist")


def test_features_builds_every_split(tiny_config, corpus, capsys):
    code, out, err = run(capsys, "features", "-c", tiny_config)
    assert code == 0, err
    for split in ("train", "dev", "test"):
        assert any(line.startswith(split) for line in out.splitlines())
        assert list((corpus / "features" / split).glob("*/index.json"))
    # A second call reuses the caches.
    code, _, err = run(capsys, "features", "-c", tiny_config)
    assert code == 0 and "reusing feature cache" in err


@pytest.fixture
def loud_corpus(tmp_path) -> tuple[Path, Path]:
    """An emotion corpus (2 training utterances per class) whose first training wav is a float wav scaled by 1e30."""
    import soundfile as sf

    root = tmp_path / "loud"
    generate_corpus(root, "emotion", n_per_class=2, train_seconds=(0.5, 0.8))
    bad = sorted((root / "wav" / "train").glob("*.wav"))[0]
    wave, rate = sf.read(bad, dtype="float32")
    sf.write(bad, wave * np.float32(1e30), rate, subtype="FLOAT")
    return root, bad


def test_features_refuse_an_out_of_range_wav_naming_it_or_skip_it(loud_corpus, tiny_config, capsys):
    root, bad = loud_corpus
    code, _, err = run(capsys, "features", "-c", tiny_config, "--data", root)
    assert code == 1
    assert_one_line_error(err, f"{bad.name}: out_of_range")
    assert "--on-error skip" in err
    assert not list((root / "features").glob("*/*/index.json")), "a refused build writes no cache"

    code, out, err = run(capsys, "features", "-c", tiny_config, "--data", root, "--on-error", "skip")
    assert code == 0, err
    warning = [line for line in err.splitlines() if "skipped 1 of 12 utterances" in line]
    assert len(warning) == 1 and bad.name in warning[0] and "out_of_range" in warning[0], err
    train_row = next(line.split() for line in out.splitlines() if line.startswith("train"))
    assert train_row[1:4] == ["11", train_row[2], "1"], out
    index = json.loads(next((root / "features" / "train").glob("*/index.json")).read_text())
    assert [(Path(s["path"]).name, s["reason"]) for s in index["skipped"]] == [(bad.name, "out_of_range")]
    assert len(index["entries"]) == 11

    # A strict build never reuses a cache that left files out: it names the file again.
    code, _, err = run(capsys, "features", "-c", tiny_config, "--data", root)
    assert code == 1
    assert_one_line_error(err, bad.name)


def test_train_on_error_skip_trains_on_the_rest(loud_corpus, tiny_config, tmp_path, capsys):
    root, bad = loud_corpus
    refused = tmp_path / "refused"
    code, _, err = run(
        capsys,
        "train",
        "-c",
        tiny_config,
        "--data",
        root,
        "--method",
        "softmax",
        "--run-dir",
        refused,
        "--set",
        "data.batch_size=4",
    )
    assert code == 1
    assert_one_line_error(err, f"{bad.name}: out_of_range")
    assert not refused.exists()

    run_dir = tmp_path / "run"
    code, _, err = run(
        capsys,
        "train",
        "-c",
        tiny_config,
        "--data",
        root,
        "--method",
        "softmax",
        "--run-dir",
        run_dir,
        "--set",
        "data.batch_size=4",
        "--on-error",
        "skip",
    )
    assert code == 0, err
    assert bad.name in err and "Traceback" not in err
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["on_error"] == "skip"
    log = (run_dir / "train.log").read_text()
    assert "1 of 12 utterances were left out" in log and bad.name in log
    assert "11 training utterances" in log
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    # The run's config keeps on_error=skip, so a resume reuses the cache that left the file out.
    code, _, err = run(capsys, "train", "--resume", run_dir, "--set", "train.epochs=2")
    assert code == 0, err


def test_on_error_does_not_split_caches_of_clean_data(tiny_config, corpus, capsys):
    # Nothing skipped: the content does not depend on on_error, so both modes share one cache.
    code, _, err = run(capsys, "features", "-c", tiny_config)
    assert code == 0, err
    before = {p: p.stat().st_ino for p in (corpus / "features").glob("*/*/features.f32")}
    code, _, err = run(capsys, "features", "-c", tiny_config, "--on-error", "skip")
    assert code == 0, err
    assert err.count("reusing feature cache") == 3
    assert {p: p.stat().st_ino for p in (corpus / "features").glob("*/*/features.f32")} == before


def test_on_error_argument_errors(tiny_config, capsys):
    code, _, err = run(capsys, "features", "-c", tiny_config, "--on-error", "ignore")
    assert code == 2
    assert_one_line_error(err, "argument --on-error: invalid choice: 'ignore'")
    code, _, err = run(capsys, "features", "-c", tiny_config, "--set", "data.on_error=ignore")
    assert code == 1
    assert_one_line_error(err, "data.on_error must be one of raise, skip")


# ------------------------------------------------------------------ train, evaluate, calibrate, report
def test_train_writes_a_run_directory(trained_runs):
    for method, run_dir in trained_runs.items():
        for name in (
            "config.yaml",
            "train.log",
            "metrics.jsonl",
            "checkpoints/last.pt",
            "checkpoints/best.pt",
        ):
            assert (run_dir / name).is_file(), (method, name)
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert config["train"]["method"] == method
        assert Path(config["data"]["dir"]).is_absolute()
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        steps = [r for r in records if r["kind"] == "step"]
        assert len(steps) == 2  # 20 utterances, batches of 8, last partial batch dropped
        assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1]
        sampled = [r["e_samples"] is not None for r in steps]
        assert all(sampled) if method == "jem" else not any(sampled)
        assert "epoch 1" in (run_dir / "train.log").read_text()


@pytest.mark.parametrize("method", ["jempp", "sadajem"])
def test_train_other_energy_methods(method, tiny_config, tmp_path, capsys):
    code, out, err = run(capsys, "train", "-c", tiny_config, "--method", method, "--run-dir", tmp_path / method)
    assert code == 0, err
    state = load_checkpoint(tmp_path / method / "checkpoints" / "last.pt")
    buffer = state["ranks"][0]["sampler"]["buffer"]
    assert buffer["init"] == ("class_gaussian" if method == "jempp" else "normal")
    if method == "jempp":
        assert buffer["init_mean"].shape == (10, 1, 32, 32)  # one Gaussian per language
    assert f"jemfast evaluate {tmp_path / method}" in out


def test_evaluate_calibrate_and_report(trained_runs, tmp_path, capsys):
    softmax, jem = trained_runs["softmax"], trained_runs["jem"]
    code, out, err = run(capsys, "evaluate", softmax, jem)
    assert code == 0, err
    assert "1s" in out and "full" in out
    test = Predictions.load(jem / "predictions" / "test.npz")
    assert sorted(test.subset_names()) == ["1s", "3s", "full"]
    assert test.logits.shape == (60, 10)
    assert Predictions.load(jem / "predictions" / "dev.npz").subsets is None
    metrics = json.loads((jem / "metrics.json").read_text())
    assert set(metrics["test"]) == {"all", "full", "3s", "1s"} and metrics["test"]["all"]["n"] == 60

    code, out, err = run(capsys, "calibrate", softmax, jem)
    assert code == 0, err
    calibration = json.loads((jem / "calibration.json").read_text())
    assert calibration["temperature"]["type"] == "TemperatureScaling"
    assert calibration["logistic"]["type"] == "LogisticScaling"
    assert set(calibration["test"]) == {"uncalibrated", "temperature", "logistic"}
    assert (jem / "calibrators" / "logistic.json").is_file()
    assert "temperature" in out and "logistic" in out

    out_dir = tmp_path / "report"
    code, out, err = run(capsys, "report", softmax, jem, "--out", out_dir)
    assert code == 0, err
    assert "softmax + TS" in out and "energy + TS" in out
    rows = json.loads((out_dir / "report.json").read_text())["rows"]
    assert {r["subset"] for r in rows} == {"all", "full", "3s", "1s"}
    assert {r["method"] for r in rows} == {"softmax", "softmax + TS", "softmax + LS", "energy", "energy + TS"}
    for name in (
        "report.md",
        "language_reliability.png",
        "language_reliability.pdf",
        "language_softmax_curves.png",
        "language_jem_curves.png",
    ):
        assert (out_dir / name).stat().st_size > 0, name


def test_report_evaluates_runs_without_predictions(trained_runs, tmp_path, capsys):
    copies = []
    for method in ("softmax", "jem"):
        copies.append(tmp_path / method)
        shutil.copytree(
            trained_runs[method],
            copies[-1],
            ignore=shutil.ignore_patterns("predictions", "metrics.json", "calibration*"),
        )
    code, out, err = run(capsys, "report", *copies, "--out", tmp_path / "report")
    assert code == 0, err
    assert "evaluating it first" in err
    assert (copies[1] / "predictions" / "test.npz").is_file()


def test_report_needs_a_softmax_and_an_energy_run(trained_runs, tmp_path, capsys):
    code, _, err = run(capsys, "report", trained_runs["jem"], "--out", tmp_path)
    assert code == 1
    assert_one_line_error(err, "task 'language' needs one softmax run and at least one energy run")


# ------------------------------------------------------------------ resume
def test_interrupt_leaves_a_resumable_run(tiny_config, tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "run"
    original = JEMTrainer._train_step
    calls = {"n": 0}

    def interrupted_step(self, x, y):
        calls["n"] += 1
        if calls["n"] == 3:  # the first step of the second epoch
            raise KeyboardInterrupt
        return original(self, x, y)

    monkeypatch.setattr(JEMTrainer, "_train_step", interrupted_step)
    code, _, err = run(
        capsys, "train", "-c", tiny_config, "--method", "jem", "--run-dir", run_dir, "--set", "train.epochs=2"
    )
    assert code == 130
    assert f"jemfast train --resume {run_dir}" in err and "Traceback" not in err
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert (state["epoch"], state["step"]) == (1, 2)

    monkeypatch.setattr(JEMTrainer, "_train_step", original)
    code, _, err = run(capsys, "train", "--resume", run_dir)
    assert code == 0, err
    assert "resuming jem run" in err
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert (state["epoch"], state["step"]) == (2, 4)
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in epochs if r["kind"] == "epoch"] == [1, 2]

    # A finished run can be extended with an override.
    code, _, err = run(capsys, "train", "--resume", run_dir, "--set", "train.epochs=3")
    assert code == 0, err
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"] == 3
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["epochs"] == 3


def test_train_refuses_to_overwrite_a_run(trained_runs, tiny_config, capsys):
    code, _, err = run(capsys, "train", "-c", tiny_config, "--method", "jem", "--run-dir", trained_runs["jem"])
    assert code == 1
    assert_one_line_error(err, "already has checkpoints")


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    """A copy of a module-wide run that a test may break."""
    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir, copy)
    return copy


def folder_contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "override", ["model.width=2", "data.n_mels=16", "train.seed=1", "train.method=softmax", "task.name=age"]
)
def test_resume_refuses_a_change_its_checkpoint_cannot_follow(override, trained_runs, tmp_path, capsys):
    run_dir = copy_run(trained_runs["jem"], tmp_path)
    before = folder_contents(run_dir)
    code, _, err = run(capsys, "train", "--resume", run_dir, "--set", override)
    assert code == 1
    assert_one_line_error(err, f"cannot resume {run_dir} with {override}")
    assert folder_contents(run_dir) == before
    code, _, err = run(capsys, "evaluate", run_dir)
    assert code == 0, err


def test_a_resume_whose_checkpoint_fails_to_load_changes_nothing(trained_runs, tmp_path, capsys):
    run_dir = copy_run(trained_runs["jem"], tmp_path)
    last = run_dir / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    before = folder_contents(run_dir)
    code, _, err = run(capsys, "train", "--resume", run_dir, "--set", "train.epochs=5")
    assert code == 1
    assert_one_line_error(err, str(last))
    assert folder_contents(run_dir) == before  # config.yaml still says 1 epoch; train.log untouched
    code, _, err = run(capsys, "evaluate", run_dir)
    assert code == 0, err


def wait_for(path: Path, process: subprocess.Popen, log: Path, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert process.poll() is None, f"the training process exited with {process.returncode}: {log.read_text()}"
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout_s} s"
        time.sleep(0.05)


def test_one_training_process_per_run_directory(tiny_config, tmp_path, capsys):
    run_dir = tmp_path / "run"
    log = tmp_path / "background.log"
    with open(log, "w") as stderr:
        background = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jemfast",
                "-q",
                "train",
                "-c",
                str(tiny_config),
                "--method",
                "softmax",
                "--run-dir",
                str(run_dir),
                "--set",
                "train.epochs=100000",
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    busy = f"run directory {run_dir} is being trained by process {background.pid} on host {socket.gethostname()}"
    try:
        wait_for(run_dir / "config.yaml", background, log)
        code, _, err = run(
            capsys, "train", "-c", tiny_config, "--method", "softmax", "--run-dir", run_dir, "--set", "train.epochs=1"
        )
        assert code == 1
        assert_one_line_error(err, busy)
        wait_for(run_dir / "checkpoints" / "last.pt", background, log)
        code, _, err = run(capsys, "train", "--resume", run_dir, "--set", "train.epochs=1")
        assert code == 1
        assert_one_line_error(err, busy)
        code, _, err = run(capsys, "evaluate", run_dir)  # reading a run in training is allowed
        assert code == 0, err
    finally:
        background.kill()
        background.wait()
    # Killed with SIGKILL: its lock is stale and the next process takes it over.
    epoch = load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"]
    code, _, err = run(capsys, "train", "--resume", run_dir, "--set", f"train.epochs={epoch + 1}")
    assert code == 0, err
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"] == epoch + 1


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "argv, code, fragment",
    [
        (["train", "--method", "ebm", "-c", "demo"], 1, "unknown method 'ebm'"),
        (["train", "-c", "demo", "--set", "train.epochs=zero"], 1, "train.epochs must be an integer"),
        (["train", "-c", "demo", "--set", "train.epoch=3"], 1, "unknown key train.epoch"),
        (["train", "-c", "demo"], 1, "data.dir is not set"),
        (["train", "-c", "no-such-recipe"], 1, "neither a file nor a packaged recipe"),
        (["train"], 1, "train needs --config"),
        (
            ["features", "-c", "demo", "--data", "/nonexistent/jemfast-data"],
            1,
            "data path /nonexistent/jemfast-data does not exist",
        ),
        (["evaluate", "/nonexistent/jemfast-run"], 1, "run directory /nonexistent/jemfast-run does not exist"),
        (["train", "--resume", "/nonexistent/jemfast-run"], 1, "does not exist"),
        (["demo", "--set", "model.depth=11"], 1, "model.depth must be"),
        ([], 2, "the following arguments are required: COMMAND"),
        (["trian"], 2, "invalid choice: 'trian'"),
        (["train", "--epochs", "3"], 2, "unrecognized arguments: --epochs 3"),
        (["evaluate", "r", "--checkpoint", "middle"], 2, "invalid choice: 'middle'"),
    ],
)
def test_argument_errors_give_one_line(argv, code, fragment, capsys):
    got, out, err = run(capsys, *argv)
    assert got == code
    assert_one_line_error(err, fragment)


@pytest.mark.parametrize(
    "override",
    [
        "data.n_mels=100000",
        "train.seed=-1",
        f"train.seed={10**23}",
        "train.lr=.nan",
        "train.momentum=.nan",
        "sampling.step_size=.inf",
        "train.energy_l2=.inf",
    ],
)
def test_out_of_range_values_stop_training_before_anything_is_written(override, tiny_config, tmp_path, capsys):
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    code, _, err = run(
        capsys,
        "train",
        "-c",
        tiny_config,
        "--method",
        "jem",
        "--run-dir",
        run_dir,
        "--set",
        override,
        f"data.cache_dir={cache}",
    )
    assert code == 1
    assert_one_line_error(err, f"{override.split('=')[0]} must be ")
    assert not run_dir.exists() and not cache.exists()


def test_train_with_data_missing_files(tmp_path, capsys):
    (tmp_path / "train.csv").write_text("utt_id,path,label,speaker,subset,duration\n")
    code, _, err = run(capsys, "train", "-c", "demo", "--data", tmp_path)
    assert code == 1
    assert_one_line_error(err, "lacks")


def test_train_with_a_missing_audio_file(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    generate_corpus(corpus, "emotion", n_per_class=1, train_seconds=(0.5, 0.5))
    next((corpus / "wav" / "train").glob("*.wav")).unlink()
    code, _, err = run(capsys, "features", "-c", "demo", "--data", corpus)
    assert code == 1
    assert_one_line_error(err, "missing")


def test_batch_larger_than_the_training_set(tiny_config, tmp_path, capsys):
    code, _, err = run(capsys, "train", "-c", tiny_config, "--run-dir", tmp_path, "--set", "data.batch_size=64")
    assert code == 1
    assert_one_line_error(err, "data.batch_size (64) exceeds the 20 training utterances")


def test_module_entry_point_exit_codes(tmp_path):
    done = subprocess.run([sys.executable, "-m", "jemfast", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and jemfast.__version__ in done.stdout
    done = subprocess.run([sys.executable, "-m", "jemfast", "train", "--method"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "expected one argument" in done.stderr


# ------------------------------------------------------------------ bench
def test_bench_lists_the_checkout_benchmarks(capsys):
    code, out, _ = run(capsys, "bench", "--list")
    assert code == 0
    names = [line.split()[0] for line in out.splitlines()]
    expected = sorted(
        p.stem[len("bench_") :] for p in (Path(jemfast.__file__).parent.parent / "benchmarks").glob("bench_*.py")
    )
    assert names == expected and "trainer" in names


def test_bench_runs_scripts_and_reports_failures(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "benchmarks"
    folder.mkdir()
    (folder / "common.py").write_text("")
    (folder / "bench_ok.py").write_text(
        "import sys, pathlib\npathlib.Path(sys.argv[1]).write_text(' '.join(sys.argv[2:]))\n"
    )
    (folder / "bench_broken.py").write_text("raise SystemExit(3)\n")
    monkeypatch.setattr(pipeline, "benchmarks_dir", lambda: folder)
    marker = tmp_path / "ran.txt"
    code, _, err = run(capsys, "bench", "ok", f"--args={marker} --no-write")
    assert code == 0, err
    assert marker.read_text() == "--no-write"
    code, _, err = run(capsys, "bench", "broken")
    assert code == 1
    assert_one_line_error(err, "broken (exit status 3)")
    code, _, err = run(capsys, "bench", "missing")
    assert_one_line_error(err, "unknown benchmark(s) missing; available: broken, ok")


def test_bench_without_a_checkout(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(jemfast, "__file__", str(tmp_path / "site-packages" / "jemfast" / "__init__.py"))
    code, _, err = run(capsys, "bench", "--list")
    assert code == 1
    assert_one_line_error(err, "no benchmarks found")


# ------------------------------------------------------------------ demo
def test_demo_end_to_end(tmp_path, capsys):
    out_dir = tmp_path / "demo"
    argv = ["demo", "--out", out_dir, "--n-per-class", "2", "--n-eval-per-class", "1", "--set", *TINY_DEMO]
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    for text in ("softmax + TS", "softmax + LS", "energy + TS", "temperature", "logistic", str(out_dir / "report")):
        assert text in out, text
    assert "epoch 1" in err  # progress reaches the user through logging
    for name in (
        "report/report.md",
        "report/report.json",
        "report/language_reliability.png",
        "runs/softmax/calibration.json",
        "runs/jem/calibration.json",
        "corpus/labels.txt",
    ):
        assert (out_dir / name).is_file(), name
    # A second demo reuses the corpus, the features and the finished runs.
    code, _, err = run(capsys, *argv)
    assert code == 0 and "reusing synthetic language corpus" in err
    assert load_checkpoint(out_dir / "runs" / "jem" / "checkpoints" / "last.pt")["epoch"] == 1


# ------------------------------------------------------------------ energy fine-tuning
def test_init_from_starts_an_energy_run_from_a_trained_classifier(trained_runs, tiny_config, tmp_path, capsys):
    source = load_checkpoint(trained_runs["softmax"] / "checkpoints" / "best.pt")["model"]
    run_dir = tmp_path / "ft"
    seen = {}
    original = JEMTrainer.fit

    def fit_and_look(self, *args, **kwargs):
        seen["weights"] = {k: v.clone() for k, v in self.module.state_dict().items()}
        return original(self, *args, **kwargs)

    JEMTrainer.fit = fit_and_look
    try:
        code, out, err = run(
            capsys,
            "train",
            "-c",
            tiny_config,
            "--method",
            "jem",
            "--run-dir",
            run_dir,
            "--init-from",
            trained_runs["softmax"],
        )
    finally:
        JEMTrainer.fit = original
    assert code == 0, err
    for name, tensor in source.items():
        assert torch.equal(seen["weights"][name], tensor), f"{name} was not taken from the softmax run"
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["train"]["init_from"] == str(trained_runs["softmax"].resolve())
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert state["epoch"] == 1 and state["step"] > 0
    assert "from the weights of" in (run_dir / "train.log").read_text()


def test_init_from_refuses_another_architecture_before_writing(trained_runs, tiny_config, tmp_path, capsys):
    run_dir = tmp_path / "ft"
    code, _, err = run(
        capsys,
        "train",
        "-c",
        tiny_config,
        "--method",
        "jem",
        "--run-dir",
        run_dir,
        "--init-from",
        trained_runs["softmax"],
        "--set",
        "model.width=2",
    )
    assert code == 1
    assert_one_line_error(err, "the architectures must match")
    assert not run_dir.exists()
    code, _, err = run(
        capsys, "train", "-c", tiny_config, "--method", "jem", "--run-dir", run_dir, "--init-from", tmp_path / "nowhere"
    )
    assert code == 1
    assert_one_line_error(err, "does not exist")
    code, _, err = run(capsys, "train", "--resume", trained_runs["jem"], "--init-from", trained_runs["softmax"])
    assert code == 1
    assert_one_line_error(err, "--init-from")


def test_resume_trains_with_the_overridden_learning_rate_and_rollbacks(trained_runs, tiny_config, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, _, err = run(capsys, "train", "-c", tiny_config, "--method", "softmax", "--run-dir", run_dir)
    assert code == 0, err
    before = load_checkpoint(run_dir / "checkpoints" / "last.pt")["optimizer"]["param_groups"][0]["lr"]
    code, _, err = run(
        capsys,
        "train",
        "--resume",
        run_dir,
        "--set",
        "train.epochs=2",
        "train.lr=0.005",
        "train.momentum=0.5",
        "train.max_rollbacks=9",
    )
    assert code == 0, err
    groups = load_checkpoint(run_dir / "checkpoints" / "last.pt")["optimizer"]["param_groups"]
    assert groups[0]["momentum"] == 0.5
    assert not (run_dir / "config.json").exists()  # one config file per run: config.yaml
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    config = [r for r in records if r["kind"] == "config"][-1]  # the resumed fit's settings
    assert config["guard"]["max_rollbacks"] == 9
    # the tiny recipe has no milestones after warm-up: the rate is the new peak, a tenth of the old one
    assert groups[0]["lr"] == pytest.approx(before * 0.005 / 0.05)


def test_config_prints_every_value_and_reads_back(capsys, tmp_path):
    from jemfast.recipes import load_config

    code, out, err = run(capsys, "config", "age", "--method", "jempp", "--set", "train.epochs=3")
    assert code == 0, err
    assert "chunk_frames: 320" in out and "method: jempp\n" in out and "  epochs: 3\n" in out
    assert "# SGLD steps per iteration" in out  # each key's help
    path = tmp_path / "printed.yaml"
    path.write_text(out)
    assert load_config(path) == load_config("age", ["train.epochs=3"], method="jempp")


def test_config_names_a_bad_override_in_one_line(capsys):
    code, _, err = run(capsys, "config", "demo", "--set", "train.lr=-1")
    assert code == 1
    assert_one_line_error(err, "train.lr must be >= 0.0, got -1.0")
