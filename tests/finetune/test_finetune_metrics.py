"""corekit.finetune.metrics against hand computations."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from fractions import Fraction as F

import pytest
import torch

from corekit.finetune.metrics import classification_metrics, generation_metrics, save_confusion_png

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# A 4-class example; class 3 ("spare") occurs in neither preds nor targets.
LABELS = ["neg", "neu", "pos", "spare"]
TARGETS = [0, 0, 0, 1, 1, 2, 2, 2]
PREDS = [0, 0, 1, 1, 2, 2, 2, 2]


def f1(tp: int, fp: int, fn: int) -> F:
    precision, recall = F(tp, tp + fp), F(tp, tp + fn)
    return 2 * precision * recall / (precision + recall)


def test_classification_by_hand():
    m = classification_metrics(PREDS, TARGETS, LABELS)
    # rows = true class, columns = predicted class:
    #   true neg (0,0,0) predicted 0,0,1   -> [2, 1, 0, 0]
    #   true neu (1,1)   predicted 1,2     -> [0, 1, 1, 0]
    #   true pos (2,2,2) predicted 2,2,2   -> [0, 0, 3, 0]
    #   spare never occurs                 -> [0, 0, 0, 0]
    assert m["confusion"] == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 3, 0], [0, 0, 0, 0]]
    # accuracy: 2 + 1 + 3 correct out of 8
    assert m["accuracy"] == pytest.approx(6 / 8)
    # per class (tp, fp, fn):
    #   neg: tp=2, fp=0, fn=1 -> P=1,   R=2/3, F1 = 2*1*(2/3)/(1+2/3)     = 4/5
    #   neu: tp=1, fp=1, fn=1 -> P=1/2, R=1/2, F1 = 1/2
    #   pos: tp=3, fp=1, fn=0 -> P=3/4, R=1,   F1 = 2*(3/4)*1/(3/4+1)     = 6/7
    #   spare: tp=fp=fn=0 -> left out of the macro mean (torchmetrics), not counted as 0
    neg, neu, pos = f1(2, 0, 1), f1(1, 1, 1), f1(3, 1, 0)
    assert (neg, neu, pos) == (F(4, 5), F(1, 2), F(6, 7))
    macro = (neg + neu + pos) / 3  # = 151/210
    assert macro == F(151, 210)
    assert m["macro_f1"] == pytest.approx(float(macro), abs=1e-6)
    # the alternatives it is not: spare counted as F1 0, or as F1 1
    assert m["macro_f1"] != pytest.approx(float((neg + neu + pos) / 4), abs=1e-3)
    assert m["macro_f1"] != pytest.approx(float((neg + neu + pos + 1) / 4), abs=1e-3)
    assert m["labels"] == LABELS and m["count"] == 8
    assert isinstance(m["accuracy"], float) and isinstance(m["macro_f1"], float)
    assert all(type(v) is int for row in m["confusion"] for v in row)


def test_absent_class_does_not_change_macro_f1():
    with_spare = classification_metrics(PREDS, TARGETS, LABELS)
    without = classification_metrics(PREDS, TARGETS, LABELS[:3])
    assert with_spare["macro_f1"] == pytest.approx(without["macro_f1"], abs=1e-6)
    assert with_spare["accuracy"] == without["accuracy"]


def test_class_only_in_targets_counts_as_zero():
    # class 2 is never predicted: tp=0, fn=1 -> F1 0, and it is counted in the mean
    m = classification_metrics([0, 1, 1], [0, 1, 2], ["a", "b", "c"])
    # a: tp=1 fp=0 fn=0 -> 1;  b: tp=1 fp=1 fn=0 -> P=1/2 R=1 F1=2/3;  c: 0
    assert m["macro_f1"] == pytest.approx(float((1 + F(2, 3) + 0) / 3), abs=1e-6)
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["confusion"] == [[1, 0, 0], [0, 1, 0], [0, 1, 0]]


def test_confusion_is_true_by_predicted():
    # one example of true class 0 predicted as class 1: row 0, column 1
    m = classification_metrics([1], [0], ["x", "y"])
    assert m["confusion"] == [[0, 1], [0, 0]]
    assert m["accuracy"] == 0.0


def test_tensor_inputs():
    m = classification_metrics(torch.tensor(PREDS), torch.tensor(TARGETS), LABELS)
    assert m == classification_metrics(PREDS, TARGETS, LABELS)


@pytest.mark.parametrize(
    ("preds", "targets", "labels"),
    [
        ([0, 1], [0], ["a", "b"]),  # lengths differ
        ([], [], ["a", "b"]),  # empty
        ([0, 2], [0, 1], ["a", "b"]),  # index out of range
        ([0, -1], [0, 1], ["a", "b"]),
        ([0], [0], ["a"]),  # one class
        (torch.tensor([0.0, 1.0]), [0, 1], ["a", "b"]),  # float "indices"
        (torch.tensor([[0, 1]]), [0, 1], ["a", "b"]),  # not 1-D
    ],
)
def test_classification_rejects_bad_input(preds, targets, labels):
    with pytest.raises(ValueError):
        classification_metrics(preds, targets, labels)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_confusion_png(tmp_path):
    m = classification_metrics(PREDS, TARGETS, LABELS)
    path = tmp_path / "plots" / "confusion.png"
    out = save_confusion_png(m["confusion"], m["labels"], path, accuracy=m["accuracy"])
    assert out == tmp_path / "plots" / "confusion.png"
    data = out.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert 2_000 < len(data) < 2_000_000
    width, height = _png_size(data)
    assert 200 <= width <= 3000 and 200 <= height <= 3000
    assert sorted(p.name for p in out.parent.iterdir()) == ["confusion.png"]


def test_confusion_png_replaces_an_existing_file_atomically(tmp_path):
    path = tmp_path / "confusion.png"
    path.write_bytes(b"old contents")
    with path.open("rb") as old:  # a reader holding the old file
        save_confusion_png([[3, 1], [0, 4]], ["a", "b"], path)
        # the old file was replaced by a new one (a rename), not rewritten in place
        assert old.read() == b"old contents"
        assert os.fstat(old.fileno()).st_ino != path.stat().st_ino
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    assert [p.name for p in tmp_path.iterdir()] == ["confusion.png"]  # no temporary files left


def test_confusion_png_all_zero_and_no_pyplot_figures(tmp_path):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    out = save_confusion_png([[0, 0], [0, 0]], ["a", "b"], tmp_path / "z.png")
    assert out.read_bytes().startswith(PNG_SIGNATURE)
    assert plt.get_fignums() == before


def test_confusion_png_rejects_wrong_shape(tmp_path):
    with pytest.raises(ValueError):
        save_confusion_png([[1, 2], [3, 4]], ["a", "b", "c"], tmp_path / "x.png")
    with pytest.raises(ValueError):
        save_confusion_png([[1, 2], [3]], ["a", "b"], tmp_path / "x.png")
    assert not list(tmp_path.iterdir())


def test_generation_by_hand():
    # "the cat sat" vs "the cat on the mat": tokens [the, cat, sat] / [the, cat, on, the, mat];
    # longest common subsequence "the cat" (sat is not in the reference): LCS = 2
    # P = 2/3, R = 2/5, F = 2PR/(P+R) = (8/15)/(16/15) = 1/2
    p, r = F(2, 3), F(2, 5)
    f_cat = 2 * p * r / (p + r)
    assert f_cat == F(1, 2)
    m = generation_metrics(["the cat sat"], ["the cat on the mat"])
    assert m == {"exact_match": 0.0, "rouge_l": pytest.approx(float(f_cat), abs=1e-6), "count": 1}

    # "the cat sat on the mat" vs "the mat sat on the cat": LCS "the sat on the" = 4 of 6 each
    # P = R = 4/6 -> F = 2/3
    m = generation_metrics(["the cat sat on the mat"], ["the mat sat on the cat"])
    assert m["rouge_l"] == pytest.approx(2 / 3, abs=1e-6)


def test_generation_mean_exact_match_and_normalization():
    preds = ["the cat sat", "  Paris\n", "", "The Cat, sat!"]
    refs = ["the cat on the mat", "Paris", "anything", "the cat sat"]
    m = generation_metrics(preds, refs)
    # exact match after strip: only "  Paris\n" == "Paris" -> 1/4 (case and punctuation count)
    assert m["exact_match"] == pytest.approx(1 / 4)
    # ROUGE-L F per pair: 1/2 (above); 1 (same tokens); 0 (empty prediction);
    # 1 ("The Cat, sat!" -> lowercased, punctuation dropped -> [the, cat, sat])
    assert m["rouge_l"] == pytest.approx((F(1, 2) + 1 + 0 + 1) / 4, abs=1e-6)
    assert m["count"] == 4


def test_generation_empty_texts_score_zero():
    assert generation_metrics([""], ["a b"])["rouge_l"] == 0.0
    assert generation_metrics(["a b"], [""])["rouge_l"] == 0.0
    m = generation_metrics([""], [""])
    assert m["rouge_l"] == 0.0 and m["exact_match"] == 1.0
    assert generation_metrics(["!!!"], ["?"])["rouge_l"] == 0.0  # no tokens after normalizing


def test_generation_rejects_bad_input():
    with pytest.raises(ValueError):
        generation_metrics(["a"], ["a", "b"])
    with pytest.raises(ValueError):
        generation_metrics([], [])


def test_module_imports_cheaply():
    code = (
        "import sys, corekit.finetune.metrics\n"
        "heavy = [m for m in ('torchmetrics', 'matplotlib') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
