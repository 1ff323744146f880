import numpy as np
import pytest

from flowkit.errors import DataError
from flowkit_text.data import demo_corpus, is_pair_file, read_pairs, read_sentences, read_training_sentences


def test_sts_benchmark_and_sick_files_read_with_their_scores(text_data):
    sts = read_pairs(text_data / "sts" / "sts-dev.csv")
    assert len(sts) == 1500 and sts.scores.min() >= 0 and sts.scores.max() <= 5
    assert sts.first[0] == "a man with a hard hat is dancing ." and sts.scores[0] == 5.0
    sick = read_pairs(text_data / "sts" / "SICK_trial.txt")
    assert len(sick) == 500 and sick.scores.min() >= 1 and sick.scores.max() <= 5
    assert is_pair_file(text_data / "sts" / "SICK_trial.txt")
    assert not is_pair_file(text_data / "rt-polarity" / "pos.txt")


def test_training_sentences_take_both_sides_of_pairs_once(tmp_path, text_data):
    sentences = tmp_path / "s.txt"
    sentences.write_text("a man with a hard hat is dancing .\n\n  new one  \n")
    got = read_training_sentences([text_data / "sts" / "sts-dev.csv", sentences])
    pairs = read_pairs(text_data / "sts" / "sts-dev.csv")
    assert got[:2] == [pairs.first[0], pairs.second[0]]
    assert got[-1] == "new one" and len(got) == len(set(got))


@pytest.mark.parametrize("content, message", [
    (b"", "no sentences"),
    (b"\x00\x01binary", "not a text file"),
    (b"caf\xe9\n", "not UTF-8"),
])
def test_bad_sentence_files_are_named(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_sentences(path)


def test_missing_file_and_folder_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_sentences(tmp_path / "missing.txt")
    with pytest.raises(DataError, match="is a folder"):
        read_sentences(tmp_path)


@pytest.mark.parametrize("row, message", [
    ("g\tf\t2012\t0001\t7.5\ta\tb", "outside"),
    ("g\tf\t2012\t0001\tnan\ta\tb", "outside"),
    ("g\tf\t2012\t0001\t3.0\ta\t ", "empty"),
])
def test_bad_sts_rows_name_the_line(tmp_path, row, message):
    path = tmp_path / "sts.csv"
    path.write_text("g\tf\t2012\t0000\t1.0\tfirst\tsecond\n" + row + "\n")
    with pytest.raises(DataError, match=f"line 2.*{message}|{message}"):
        read_pairs(path)


def test_sick_row_with_a_non_numeric_score(tmp_path):
    path = tmp_path / "sick.txt"
    path.write_text("pair_ID\tsentence_A\tsentence_B\trelatedness_score\n1\ta\tb\thigh\n")
    with pytest.raises(DataError, match="line 2: the score 'high' is not a number"):
        read_pairs(path)


def test_a_sentence_file_is_not_taken_for_pairs(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("just a sentence\n")
    with pytest.raises(DataError, match="neither an STS Benchmark file"):
        read_pairs(path)


def test_demo_corpus_is_the_documented_sample():
    corpus = demo_corpus()
    assert len(corpus["positive"]) == len(corpus["negative"]) == 1000
    assert len(corpus["sts"]) == 500 and np.ptp(corpus["sts"].scores) > 4
    assert not set(corpus["positive"]) & set(corpus["negative"])
