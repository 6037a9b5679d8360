"""labels.py: every malformed labels CSV gives a LabelsError naming the row and what to do."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from dfdetect.labels import FAKE, REAL, LabelsError, int_to_label, label_to_int, read_labels


@pytest.fixture
def videos(tmp_path, portrait_video) -> Path:
    """A videos folder holding real-face clips a.mp4, b.mp4 and sub/c.mp4."""
    root = tmp_path / "videos"
    (root / "sub").mkdir(parents=True)
    src = portrait_video("obama.jpg", frames=6, size=(64, 64))
    for name in ("a.mp4", "b.mp4", "sub/c.mp4"):
        shutil.copy(src, root / name)
    return root


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "labels.csv"
    path.write_text(text)
    return path


def test_classes_defined_once():
    assert (REAL, FAKE) == (0, 1)
    assert label_to_int(" fake ") == FAKE and label_to_int("Real") == REAL
    assert int_to_label(1) == "FAKE"
    with pytest.raises(LabelsError, match="REAL or FAKE"):
        label_to_int("maybe")


def test_valid_csv_with_optional_columns(tmp_path, videos):
    csv = write(tmp_path, "file,label,group,split\na.mp4,real,p1,TRAIN\nb.mp4,Fake,p1,train\n"
                          "sub/c.mp4,REAL,,\n")
    df = read_labels(csv, videos)
    assert list(df.columns) == ["file", "label", "group", "split"]
    assert df["file"].tolist() == ["a.mp4", "b.mp4", "sub/c.mp4"]
    assert df["label"].tolist() == ["REAL", "FAKE", "REAL"]
    assert df["group"].tolist() == ["p1", "p1", "c"]  # empty group -> the file's stem
    assert df["split"].tolist() == ["train", "train", ""]


def test_seed_form_and_windows_separators(tmp_path, videos):
    df = read_labels(write(tmp_path, "file,label\nsub\\c.mp4,REAL\n ./a.mp4 , FAKE\n"), videos)
    assert df["file"].tolist() == ["sub/c.mp4", "a.mp4"]
    assert df["group"].tolist() == ["c", "a"] and df["split"].tolist() == ["", ""]


def test_headerless_reference_form_is_read_with_a_warning(tmp_path, videos, caplog):
    with caplog.at_level(logging.WARNING, logger="dfdetect.labels"):
        df = read_labels(write(tmp_path, "a.mp4,REAL\nb.mp4,FAKE\n"), videos)
    assert df["file"].tolist() == ["a.mp4", "b.mp4"]  # the first line is a video, not lost
    assert df["label"].tolist() == ["REAL", "FAKE"]
    assert "no header" in caplog.text and "file,label" in caplog.text


@pytest.mark.parametrize("text, pattern", [
    ("name,label\na.mp4,REAL\n", r"missing column\(s\) \['file'\].*header"),
    ("file,class\na.mp4,REAL\n", r"missing column\(s\) \['label'\]"),
    ("file,label\n", "no rows"),
    ("", "empty"),
    ("file,label\na.mp4,REAL\nb.mp4,deepfake\n", r"line 3 \(b\.mp4\): unknown label 'deepfake'.*REAL or FAKE"),
    ("file,label\na.mp4,REAL\nb.mp4,FAKE\n./a.mp4,FAKE\n", r"lines 2 and 4: 'a\.mp4' is listed twice"),
    ("file,label\na.mp4,REAL\n,FAKE\n", r"line 3: empty file name"),
    ("file,label\n../secret.mp4,REAL\n", r"line 2: '\.\./secret\.mp4' points outside the videos folder"),
    ("file,label\nsub/../../x.mp4,REAL\n", r"line 2: .* points outside"),
    ("file,label\n/etc/x.mp4,REAL\n", r"line 2: .* points outside"),
    ("file,label\nC:\\x.mp4,REAL\n", r"line 2: .* points outside"),
    ("file,label,split\na.mp4,REAL,validation\n", r"line 2 \(a\.mp4\): unknown split 'validation'"),
])
def test_bad_csv_names_the_problem(tmp_path, text, pattern):
    with pytest.raises(LabelsError, match=pattern) as err:
        read_labels(write(tmp_path, text))
    assert "labels.csv" in str(err.value)  # the file is named


def test_missing_csv_file(tmp_path):
    with pytest.raises(LabelsError, match="no such labels file"):
        read_labels(tmp_path / "nope.csv")


def test_all_missing_videos_are_listed(tmp_path, videos):
    csv = write(tmp_path, "file,label\na.mp4,REAL\ngone1.mp4,FAKE\nb.mp4,REAL\nsub/gone2.mp4,FAKE\n")
    read_labels(csv)  # without a videos folder, nothing is checked on disk
    with pytest.raises(LabelsError, match=r"2 of 4 listed file\(s\).*gone1\.mp4, sub/gone2\.mp4"):
        read_labels(csv, videos)


def test_unlisted_videos_give_a_counted_warning(tmp_path, videos, caplog):
    (videos / "notes.txt").write_text("not a video")
    with caplog.at_level(logging.WARNING, logger="dfdetect.labels"):
        read_labels(write(tmp_path, "file,label\na.mp4,REAL\n"), videos)
    assert "2 video(s)" in caplog.text  # b.mp4 and sub/c.mp4; notes.txt is not a video
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dfdetect.labels"):
        read_labels(write(tmp_path, "file,label\na.mp4,REAL\nb.mp4,FAKE\nsub/c.mp4,REAL\n"), videos)
    assert "not in" not in caplog.text
