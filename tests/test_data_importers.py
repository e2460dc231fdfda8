"""Kaldi / AP17-OLR, CASIA and VoxCeleb-Enrichment importers on small generated fixtures."""

import numpy as np
import pytest
import soundfile as sf

from jemfast.data.audio import AudioError
from jemfast.data.importers import (
    age_group,
    age_group_names,
    import_ap17_olr,
    import_casia,
    import_kaldi_dir,
    import_voxceleb_age,
)
from jemfast.data.manifest import read_labels, read_manifest


def make_wav(path, seconds=0.5, rate=16000):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.full(int(seconds * rate), 0.1, dtype=np.float32), rate)
    return path


def make_kaldi_dir(folder, utts):
    """utts: list of (utt_id, language, speaker, seconds)."""
    folder.mkdir(parents=True)
    scp, lang, spk = [], [], []
    for utt, language, speaker, seconds in utts:
        make_wav(folder / "audio" / f"{utt}.wav", seconds)
        scp.append(f"{utt} audio/{utt}.wav")
        lang.append(f"{utt} {language}")
        spk.append(f"{utt} {speaker}")
    (folder / "wav.scp").write_text("\n".join(scp) + "\n")
    (folder / "utt2lang").write_text("\n".join(lang) + "\n")
    (folder / "utt2spk").write_text("\n".join(spk) + "\n")


def test_kaldi_dir(tmp_path):
    make_kaldi_dir(tmp_path / "d", [("u1", "zh-cn", "s1", 0.5), ("u2", "ja-jp", "s2", 1.25)])
    report = import_kaldi_dir(tmp_path / "d", tmp_path / "out.csv", subset="3s")
    rows = read_manifest(tmp_path / "out.csv")
    assert [(r.utt_id, r.label, r.speaker, r.subset) for r in rows] == [
        ("u1", "zh-cn", "s1", "3s"),
        ("u2", "ja-jp", "s2", "3s"),
    ]
    assert rows[1].duration == pytest.approx(1.25)
    assert report.counts == {"out": 2}


def test_kaldi_segments_and_missing_audio(tmp_path):
    make_kaldi_dir(tmp_path / "d", [("rec", "x", "s", 2.0)])
    (tmp_path / "d" / "segments").write_text("a rec 0.0 0.5\nb rec 0.5 1.5\n")
    (tmp_path / "d" / "utt2lang").write_text("a x\nb x\n")
    import_kaldi_dir(tmp_path / "d", tmp_path / "out.csv")
    rows = read_manifest(tmp_path / "out.csv")
    assert [(r.utt_id, r.start, r.end, r.duration) for r in rows] == [("a", 0.0, 0.5, 0.5), ("b", 0.5, 1.5, 1.0)]

    make_kaldi_dir(tmp_path / "e", [("u1", "x", "s", 0.5), ("u2", "x", "s", 0.5)])
    (tmp_path / "e" / "audio" / "u2.wav").unlink()
    with pytest.raises(AudioError, match="u2.wav"):
        import_kaldi_dir(tmp_path / "e", tmp_path / "e.csv")
    report = import_kaldi_dir(tmp_path / "e", tmp_path / "e.csv", on_error="skip")
    assert [r.utt_id for r in read_manifest(tmp_path / "e.csv")] == ["u1"]
    assert len(report.skipped) == 1 and report.skipped[0][1] == "missing"


def test_kaldi_pipe_is_rejected(tmp_path):
    make_kaldi_dir(tmp_path / "d", [("u1", "x", "s", 0.5)])
    (tmp_path / "d" / "wav.scp").write_text("u1 sox a.flac -t wav - |\n")
    with pytest.raises(ValueError, match="pipe"):
        import_kaldi_dir(tmp_path / "d", tmp_path / "out.csv")


def test_ap17_olr_layout(tmp_path):
    root = tmp_path / "olr"
    make_kaldi_dir(root / "train", [("t1", "zh-cn", "a", 0.5), ("t2", "ko-kr", "b", 0.5)])
    make_kaldi_dir(root / "dev", [("d1", "ko-kr", "c", 0.5)])
    make_kaldi_dir(root / "test_1s", [("x1", "zh-cn", "d", 1.0)])
    make_kaldi_dir(root / "test_3s", [("x1", "ko-kr", "d", 3.0)])
    make_kaldi_dir(root / "test_all", [("x2", "zh-cn", "e", 4.0)])
    report = import_ap17_olr(root, tmp_path / "out")
    assert read_labels(report.labels) == ["ko-kr", "zh-cn"]
    test = read_manifest(report.manifests["test"])
    assert sorted((r.utt_id, r.subset) for r in test) == [("3s-x1", "3s"), ("x1", "1s"), ("x2", "full")]
    assert report.counts == {"train": 2, "dev": 1, "test": 3}


def make_casia(root, speakers=("liuchanhg", "wangzhe", "zhaoquanyin"), per_folder=5):
    for speaker in speakers:
        for folder in ("angry", "fear", "happy", "normal", "sad", "surprise"):
            for k in range(per_folder):
                make_wav(root / speaker / folder / f"{k:03d}.wav", 0.3)


def test_casia_maps_normal_to_neutral_and_splits(tmp_path):
    make_casia(tmp_path / "casia")
    report = import_casia(tmp_path / "casia", tmp_path / "out", test_fraction=0.2, dev_fraction=0.2)
    assert read_labels(report.labels) == ["angry", "fear", "happy", "neutral", "sad", "surprise"]
    splits = {s: read_manifest(p) for s, p in report.manifests.items()}
    assert {r.label for r in splits["train"]} == set(read_labels(report.labels))
    assert sum(len(rows) for rows in splits.values()) == 3 * 6 * 5
    assert len(splits["test"]) == 3 * 6 * 1 and len(splits["dev"]) == 3 * 6 * 1
    ids = [r.utt_id for rows in splits.values() for r in rows]
    assert len(set(ids)) == len(ids)


def test_casia_speaker_independent(tmp_path):
    make_casia(tmp_path / "casia", per_folder=2)
    report = import_casia(tmp_path / "casia", tmp_path / "out", speaker_independent=True, test_speakers=["wangzhe"])
    test = read_manifest(report.manifests["test"])
    train = read_manifest(report.manifests["train"])
    assert {r.speaker for r in test} == {"wangzhe"}
    assert "wangzhe" not in {r.speaker for r in train}
    with pytest.raises(ValueError, match="nobody"):
        import_casia(tmp_path / "casia", tmp_path / "out", speaker_independent=True, test_speakers=["nobody"])


def test_casia_unknown_folder(tmp_path):
    make_wav(tmp_path / "casia" / "spk" / "bored" / "a.wav")
    with pytest.raises(ValueError, match="bored"):
        import_casia(tmp_path / "casia", tmp_path / "out")


def test_age_groups():
    assert age_group_names() == ["under30", "30to39", "40to49", "50plus"]
    groups = [age_group(a) for a in (18, 29.9, 30, 45, 50, 90)]
    assert groups == ["under30", "under30", "30to39", "40to49", "50plus", "50plus"]
    assert age_group(40, boundaries=(25, 45)) == "25to44"
    with pytest.raises(ValueError, match="increasing"):
        age_group_names((40, 30))


def test_voxceleb_age(tmp_path):
    wav_root = tmp_path / "wav"
    lines = ["speaker_age,birth_year,Name,VoxCeleb_ID,video_id"]
    for k, age in enumerate([22, 35, 47, 63]):
        spk = f"id1000{k}"
        lines.append(f"{age},{2015 - age},Person {k},{spk},vid{k}")
        make_wav(wav_root / spk / f"vid{k}" / "00001.wav")
        make_wav(wav_root / spk / f"vid{k}" / "00002.wav")
    (tmp_path / "train.csv").write_text("\n".join(lines[:4]) + "\n")
    (tmp_path / "test.csv").write_text("\n".join([lines[0], lines[4], "40,1975,Ghost,id99999,none"]) + "\n")
    lists = {"train": tmp_path / "train.csv", "dev": tmp_path / "train.csv", "test": tmp_path / "test.csv"}
    with pytest.raises(AudioError, match="id99999"):
        import_voxceleb_age(lists, wav_root, tmp_path / "out")
    report = import_voxceleb_age(lists, wav_root, tmp_path / "out", on_error="skip")
    train = read_manifest(report.manifests["train"])
    labelled = [(r.speaker, r.label) for r in train[::2]]
    assert labelled == [("id10000", "under30"), ("id10001", "30to39"), ("id10002", "40to49")]
    assert [r.label for r in read_manifest(report.manifests["test"])] == ["50plus", "50plus"]
    assert report.skipped == [(str(wav_root / "id99999" / "none"), "missing")]
    assert read_labels(report.labels) == age_group_names()


def test_voxceleb_single_list_is_split_by_speaker(tmp_path):
    wav_root = tmp_path / "wav"
    lines = ["speaker_age\tbirth_year\tName\tVoxCeleb_ID\tvideo_id"]
    for k in range(10):
        lines.append(f"{20 + 5 * k}\t1970\tP{k}\tid{k:05d}\tv")
        make_wav(wav_root / f"id{k:05d}" / "v" / "1.wav")
    (tmp_path / "all.tsv").write_text("\n".join(lines) + "\n")
    report = import_voxceleb_age(tmp_path / "all.tsv", wav_root, tmp_path / "out", test_fraction=0.2, dev_fraction=0.1)
    speakers = {s: {r.speaker for r in read_manifest(p)} for s, p in report.manifests.items()}
    assert (len(speakers["train"]), len(speakers["dev"]), len(speakers["test"])) == (7, 1, 2)
    assert not (speakers["train"] & speakers["test"]) and not (speakers["train"] & speakers["dev"])
