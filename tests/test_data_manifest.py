"""Manifest CSV and labels.txt round trips and validation."""

import pytest

from jemfast.data.manifest import ManifestRow, read_labels, read_manifest, write_labels, write_manifest


def test_round_trip_with_segments(tmp_path):
    rows = [
        ManifestRow("u1", "wav/u1.wav", "zh", "s1", "full", 4.25),
        ManifestRow("u1_1s", "wav/u1.wav", "zh", "s1", "1s", 1.0, start=0.5, end=1.5),
    ]
    write_manifest(tmp_path / "m.csv", rows)
    assert read_manifest(tmp_path / "m.csv") == rows
    assert (tmp_path / "m.csv").read_text().splitlines()[0] == "utt_id,path,label,speaker,subset,duration,start,end"


def test_round_trip_without_segments(tmp_path):
    rows = [ManifestRow("a", "/abs/a.wav", "sad", "", "", 1.5)]
    write_manifest(tmp_path / "m.csv", rows)
    assert read_manifest(tmp_path / "m.csv") == rows
    assert "start" not in (tmp_path / "m.csv").read_text()
    assert rows[0].resolved_path(tmp_path).as_posix() == "/abs/a.wav"
    assert ManifestRow("b", "x/b.wav", "sad").resolved_path(tmp_path) == tmp_path / "x" / "b.wav"


def test_missing_column_and_bad_values(tmp_path):
    (tmp_path / "a.csv").write_text("utt_id,path,label\nu,p,l\n")
    with pytest.raises(ValueError, match="lacks columns"):
        read_manifest(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("utt_id,path,label,speaker,subset,duration\nu,p,l,s,,abc\n")
    with pytest.raises(ValueError, match="b.csv:2.*duration"):
        read_manifest(tmp_path / "b.csv")
    (tmp_path / "c.csv").write_text("utt_id,path,label,speaker,subset,duration\nu,p,l,s,,1\nu,q,l,s,,1\n")
    with pytest.raises(ValueError, match="duplicate utt_id 'u'"):
        read_manifest(tmp_path / "c.csv")
    with pytest.raises(ValueError, match="end"):
        ManifestRow("u", "p", "l", start=2.0, end=1.0)
    with pytest.raises(TypeError, match="ManifestRow"):
        write_manifest(tmp_path / "d.csv", [("u", "p")])


def test_labels_round_trip_and_errors(tmp_path):
    write_labels(tmp_path / "labels.txt", ["b", "a", "c"])
    assert read_labels(tmp_path / "labels.txt") == ["b", "a", "c"]
    with pytest.raises(ValueError, match="duplicate"):
        write_labels(tmp_path / "x.txt", ["a", "a"])
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        read_labels(tmp_path / "empty.txt")


@pytest.mark.parametrize("tail", ["u3,c.wav,b,s3,,1.0\n", ""], ids=["quote-runs-on", "quote-on-last-line"])
def test_unterminated_quote_names_file_and_line(tmp_path, tail):
    path = tmp_path / "quote.csv"
    path.write_text('utt_id,path,label,speaker,subset,duration\nu1,a.wav,a,s1,,1.0\nu2,"b.wav,b,s2,,1.0\n' + tail)
    with pytest.raises(ValueError, match=r"quote\.csv:3: row has 2 fields.*quote.*never closed"):
        read_manifest(path)


def test_rows_may_leave_out_trailing_optional_columns(tmp_path):
    path = tmp_path / "short_rows.csv"
    path.write_text("utt_id,path,label,speaker,subset,duration,start,end\nu1,a.wav,a,s1,,1.0\n")
    assert read_manifest(path) == [ManifestRow("u1", "a.wav", "a", "s1", "", 1.0)]
