"""Data sources: the embedded stdlib corpus, files/globs/trees/JSONL, cleaning and the split."""

from __future__ import annotations

import json
import random
import sysconfig
import unicodedata
from pathlib import Path

import pytest
from helpers import model_section

from corekit.data import sources
from corekit.data.sources import (
    CleanStats,
    Document,
    clean_documents,
    file_documents,
    raw_documents,
    split_documents,
    split_of,
    stdlib_documents,
)
from corekit.errors import CorekitError, SpecError
from corekit.spec import load_spec

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma".split()


def data_spec(registry, **data):
    """A validated ``[data]`` section (inside a small run spec)."""
    return load_spec({"model": model_section(), "data": data}, registry=registry).data


def sentence(rng: random.Random, n: int = 12) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def texts(docs) -> list[str]:
    return [d.text for d in docs]


def origins(docs) -> list[str]:
    return [d.origin for d in docs]


# --------------------------------------------------------------------------- python-stdlib
def test_stdlib_corpus_has_stdlib_sources_and_pydoc_topics_but_no_tests():
    from pydoc_data.topics import topics

    root = Path(sysconfig.get_paths()["stdlib"])
    docs = list(stdlib_documents())
    files = [d.origin.removeprefix("stdlib:") for d in docs if d.origin.startswith("stdlib:")]
    pydoc = {d.origin.removeprefix("pydoc:"): d.text for d in docs if d.origin.startswith("pydoc:")}
    assert len(files) + len(pydoc) == len(docs)
    # real modules are there, with their source text
    for name in ("os.py", "json/__init__.py", "collections/__init__.py", "unittest/case.py"):
        assert name in files, name
    assert next(d.text for d in docs if d.origin == "stdlib:os.py") == (root / "os.py").read_text(encoding="utf-8")
    # only .py files, no tests, nothing installed
    for name in files:
        parts = Path(name).parts
        assert name.endswith(".py"), name
        assert not set(parts[:-1]) & {"test", "tests", "idle_test"}, name
        assert not parts[-1].startswith("test_"), name
        assert "site-packages" not in parts and "dist-packages" not in parts, name
    assert files == sorted(files, key=Path)
    # the pydoc topics, every one, after the sources
    assert pydoc == topics
    first_pydoc = next(i for i, d in enumerate(docs) if d.origin.startswith("pydoc:"))
    assert all(d.origin.startswith("pydoc:") for d in docs[first_pydoc:])


def test_stdlib_exclusions_on_a_fake_tree(tmp_path, monkeypatch):
    """Whatever the interpreter ships, test files and dirs and installed packages stay out."""
    for rel in ["a.py", "pkg/__init__.py", "pkg/b.py", "pkg/test_b.py", "test/support.py", "pkg/tests/t.py",
                "idlelib/idle_test/z.py", "site-packages/foo/m.py", "dist-packages/n.py", "__pycache__/c.py",
                "notes.txt", "pkg/data.json"]:
        write(tmp_path / rel, f"# {rel}\n")
    monkeypatch.setattr(sources, "_stdlib_root", lambda: tmp_path)
    docs = list(stdlib_documents())
    files = [o for o in origins(docs) if o.startswith("stdlib:")]
    assert files == ["stdlib:a.py", "stdlib:pkg/__init__.py", "stdlib:pkg/b.py"]
    assert next(d.text for d in docs if d.origin == "stdlib:pkg/b.py") == "# pkg/b.py\n"
    assert any(o.startswith("pydoc:") for o in origins(docs))


def test_default_source_is_python_stdlib(registry):
    data = data_spec(registry, max_documents=5, min_chars=1)
    assert data.source == "python-stdlib"
    docs = list(clean_documents(raw_documents(data), data, CleanStats()))
    assert len(docs) == 5 and all(o.startswith("stdlib:") for o in origins(docs))


def test_paths_without_source_turn_off_the_stdlib(registry, tmp_path):
    write(tmp_path / "a.txt", "only this document")
    data = data_spec(registry, paths=[str(tmp_path / "a.txt")])
    assert data.source is None
    assert texts(raw_documents(data)) == ["only this document"]
    # naming the source as well keeps both: the stdlib first, then the files
    both = data_spec(registry, source="python-stdlib", paths=[str(tmp_path / "a.txt")])
    docs = list(raw_documents(both))
    assert docs[0].origin.startswith("stdlib:") and docs[-1].text == "only this document"
    assert any(o.startswith("pydoc:") for o in origins(docs))


def test_no_corpus_at_all_is_a_spec_error_naming_data_source(registry):
    with pytest.raises(SpecError) as exc:
        data_spec(registry, source=None)
    assert "data.source" in [i.path for i in exc.value.issues]
    assert "data.source" in str(exc.value) and "paths" in str(exc.value)


# --------------------------------------------------------------------------- files
@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "corpus"
    write(root / "a.txt", "text of a")
    write(root / "b.txt", "text of b")
    write(root / "c.md", "text of c")
    write(root / "sub" / "d.txt", "text of d")
    write(root / "sub" / "deep" / "e.txt", "text of e")
    write(root / "sub" / "deep" / "f.py", "text of f")
    return root


def test_a_single_text_file_is_one_document(tree):
    docs = list(file_documents([str(tree / "a.txt")]))
    assert docs == [Document(str(tree / "a.txt"), "text of a")]


def test_globs_match_one_level_and_double_star_recurses(tree):
    assert texts(file_documents([str(tree / "*.txt")])) == ["text of a", "text of b"]
    assert texts(file_documents([str(tree / "**" / "*.txt")])) == [
        "text of a", "text of b", "text of d", "text of e"]
    assert texts(file_documents([str(tree / "sub" / "**" / "*.py")])) == ["text of f"]


def test_relative_globs_resolve_against_the_working_directory(tree, monkeypatch):
    monkeypatch.chdir(tree)
    assert texts(file_documents(["*.md", "sub/*.txt"])) == ["text of c", "text of d"]


def test_a_directory_is_read_recursively_filtered_by_suffixes(tree):
    everything = texts(file_documents([str(tree)]))
    assert sorted(everything) == [f"text of {c}" for c in "abcdef"]
    assert texts(file_documents([str(tree)], suffixes=[".txt", ".md"])) == [
        "text of a", "text of b", "text of c", "text of d", "text of e"]
    assert texts(file_documents([str(tree)], suffixes=[".py"])) == ["text of f"]


def test_directory_spec_with_suffixes(registry, tree):
    data = data_spec(registry, paths=[str(tree)], suffixes=[".md"])
    assert texts(raw_documents(data)) == ["text of c"]


def test_binary_files_are_skipped(tmp_path):
    write(tmp_path / "good.txt", "plain text here")
    write(tmp_path / "image.bin", bytes(range(256)) * 4)
    write(tmp_path / "late_nul.dat", b"x" * 100 + b"\0" + b"y" * 100)
    assert texts(file_documents([str(tmp_path)])) == ["plain text here"]


def test_invalid_utf8_is_replaced_not_fatal(tmp_path):
    write(tmp_path / "latin1.txt", "caf\u00e9 au lait".encode("latin-1"))
    assert texts(file_documents([str(tmp_path)])) == ["caf\ufffd au lait"]


def test_jsonl_gives_one_document_per_line_from_the_named_field(registry, tmp_path):
    path = tmp_path / "data.jsonl"
    rows = [{"id": 1, "body": "first body"}, {"id": 2, "body": "second body", "text": "not this"}]
    write(path, json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]) + "\n")
    data = data_spec(registry, paths=[str(path)], text_field="body")
    docs = list(raw_documents(data))
    assert texts(docs) == ["first body", "second body"]
    assert origins(docs) == [f"{path}:1", f"{path}:3"]


def test_jsonl_and_text_files_mix_in_a_directory(tmp_path):
    write(tmp_path / "a.txt", "from a text file")
    write(tmp_path / "b.jsonl", '{"text": "line one"}\n{"text": "line two"}\n')
    assert texts(file_documents([str(tmp_path)])) == ["from a text file", "line one", "line two"]


# --------------------------------------------------------------------------- bad input
def test_a_glob_matching_nothing_names_the_entry_and_pattern(registry, tmp_path):
    write(tmp_path / "a.txt", "some text")
    data = data_spec(registry, paths=[str(tmp_path / "nomatch" / "*.txt")])
    with pytest.raises(CorekitError) as exc:
        list(raw_documents(data))
    assert "data.paths[0]" in str(exc.value) and str(tmp_path / "nomatch" / "*.txt") in str(exc.value)

    data = data_spec(registry, paths=[str(tmp_path / "a.txt"), "missing/**/*.md"])
    with pytest.raises(CorekitError) as exc:
        list(raw_documents(data))
    message = str(exc.value)
    assert "data.paths[1]" in message and "missing/**/*.md" in message
    assert str(Path.cwd()) in message  # a relative pattern says where it was looked for


def test_a_directory_with_no_matching_suffix_is_an_error(tmp_path):
    write(tmp_path / "a.txt", "some text")
    with pytest.raises(CorekitError, match=r"data\.paths\[0\]"):
        list(file_documents([str(tmp_path)], suffixes=[".rst"]))


def test_a_jsonl_line_without_the_field_names_file_line_and_field(registry, tmp_path):
    path = tmp_path / "data.jsonl"
    write(path, '{"text": "fine"}\n{"body": "wrong field", "id": 7}\n')
    data = data_spec(registry, paths=[str(path)])
    with pytest.raises(CorekitError) as exc:
        list(raw_documents(data))
    message = str(exc.value)
    assert f"{path}:2" in message and "'text'" in message
    assert "body" in message and "data.text_field" in message


def test_a_jsonl_line_that_is_not_json_names_file_and_line(tmp_path):
    path = tmp_path / "data.jsonl"
    write(path, '{"text": "fine"}\n{"text": "fine too"}\n{"text": oops}\n')
    with pytest.raises(CorekitError) as exc:
        list(file_documents([str(path)]))
    assert f"{path}:3" in str(exc.value) and "JSON" in str(exc.value)


@pytest.mark.parametrize("line", ['["a", "list"]', '{"text": 42}', '{"text": null}'])
def test_a_jsonl_line_of_the_wrong_shape_is_an_error(tmp_path, line):
    path = tmp_path / "data.jsonl"
    write(path, line + "\n")
    with pytest.raises(CorekitError, match=f"{path}:1"):
        list(file_documents([str(path)]))


# --------------------------------------------------------------------------- cleaning
def test_cleaning_normalises_dedupes_filters_and_counts(registry, tmp_path):
    decomposed = "un caf" + "e\u0301" + " tr" + "e\u0300" + "s bon, vraiment"
    composed = unicodedata.normalize("NFC", decomposed)
    assert composed != decomposed and "\u00e9" in composed
    write(tmp_path / "01.txt", decomposed)
    write(tmp_path / "02.txt", composed)  # a duplicate once normalised
    write(tmp_path / "03.txt", "a document long enough to keep")
    write(tmp_path / "04.txt", "a document long enough to keep")  # an exact duplicate
    write(tmp_path / "05.txt", "tiny")  # too short
    # short once stripped
    write(tmp_path / "06.txt", "   padded        \n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n   ")
    write(tmp_path / "07.txt", "another document long enough to keep")
    data = data_spec(registry, paths=[str(tmp_path)], min_chars=20)
    stats = CleanStats()
    docs = list(clean_documents(raw_documents(data), data, stats))
    assert texts(docs) == [composed, "a document long enough to keep", "another document long enough to keep"]
    assert "e\u0301" not in docs[0].text and "caf\u00e9" in docs[0].text
    assert stats == CleanStats(documents_in=7, too_short=2, duplicates=2, documents_out=3)
    assert stats.as_dict() == {"documents_in": 7, "too_short": 2, "duplicates": 2, "documents_out": 3}


def test_cleaning_steps_can_be_turned_off(registry, tmp_path):
    decomposed = "e\u0301" * 20
    write(tmp_path / "1.txt", decomposed)
    write(tmp_path / "2.txt", decomposed)
    write(tmp_path / "3.txt", "x")
    data = data_spec(registry, paths=[str(tmp_path)], normalize=False, dedupe=False, min_chars=0)
    stats = CleanStats()
    assert texts(clean_documents(raw_documents(data), data, stats)) == [decomposed, decomposed, "x"]
    assert stats == CleanStats(documents_in=3, too_short=0, duplicates=0, documents_out=3)


def test_max_documents_counts_cleaned_documents(registry, tmp_path):
    rng = random.Random(1)
    for i in range(20):
        write(tmp_path / f"{i:02d}.txt", sentence(rng) if i != 1 else "short")
    data = data_spec(registry, paths=[str(tmp_path)], min_chars=10, max_documents=5)
    stats = CleanStats()
    docs = list(clean_documents(raw_documents(data), data, stats))
    assert origins(docs) == [str(tmp_path / f"{i:02d}.txt") for i in (0, 2, 3, 4, 5)]
    assert stats.documents_out == 5 and stats.too_short == 1 and stats.documents_in == 6


# --------------------------------------------------------------------------- the split
@pytest.fixture
def many_docs(tmp_path):
    """A JSONL file of 2000 distinct documents."""
    rng = random.Random(7)
    path = tmp_path / "many.jsonl"
    write(path, "".join(json.dumps({"text": f"{i}: {sentence(rng)}"}) + "\n" for i in range(2000)))
    return path


def test_split_is_by_document_deterministic_and_near_val_fraction(registry, many_docs):
    data = data_spec(registry, paths=[str(many_docs)], val_fraction=0.2, min_chars=1)
    cleaned = texts(clean_documents(raw_documents(data), data, CleanStats()))
    train, val = list(split_documents(data, "train")), list(split_documents(data, "val"))
    # every document lands, whole, in exactly one split, in corpus order
    assert sorted(train + val) == sorted(cleaned) and not set(train) & set(val)
    assert train == [t for t in cleaned if t in set(train)]
    assert val == [t for t in cleaned if t in set(val)]
    assert 0.17 < len(val) / len(cleaned) < 0.23
    # the same input twice gives the same split
    assert list(split_documents(data, "train")) == train and list(split_documents(data, "val")) == val


def test_split_of_a_document_does_not_depend_on_the_rest_of_the_corpus(registry, many_docs, tmp_path):
    data = data_spec(registry, paths=[str(many_docs)], val_fraction=0.2, min_chars=1)
    val = set(split_documents(data, "val"))
    # drop every other line and reorder: the remaining documents keep their split
    lines = many_docs.read_text(encoding="utf-8").splitlines(keepends=True)
    other = write(tmp_path / "other.jsonl", "".join(reversed(lines[::2])))
    data2 = data_spec(registry, paths=[str(other)], val_fraction=0.2, min_chars=1)
    for text in split_documents(data2, "val"):
        assert text in val
    for text in split_documents(data2, "train"):
        assert text not in val


@pytest.mark.parametrize("fraction", [0.01, 0.5, 0.9])
def test_split_of_tracks_val_fraction(fraction):
    rng = random.Random(3)
    docs = [f"{i} {sentence(rng, 4)}" for i in range(4000)]
    share = sum(split_of(t, fraction) == "val" for t in docs) / len(docs)
    assert abs(share - fraction) < 0.03
    assert [split_of(t, fraction) for t in docs] == [split_of(t, fraction) for t in docs]


def test_split_stats_are_filled_by_split_documents(registry, many_docs):
    data = data_spec(registry, paths=[str(many_docs)], min_chars=1)
    stats = CleanStats()
    list(split_documents(data, "val", stats))
    assert stats.documents_in == stats.documents_out == 2000


def test_directories_skip_hidden_files_and_folders(tmp_path):
    from corekit.data.sources import file_documents

    (tmp_path / "corpus" / ".git").mkdir(parents=True)
    (tmp_path / "corpus" / ".git" / "HEAD").write_text("ref: refs/heads/main " * 5)
    (tmp_path / "corpus" / ".notes.txt").write_text("hidden " * 10)
    (tmp_path / "corpus" / "a.txt").write_text("visible text " * 10)
    docs = list(file_documents([str(tmp_path / "corpus")]))
    assert [Path(d.origin).name for d in docs] == ["a.txt"]


def test_large_text_files_are_cut_at_blank_lines(tmp_path):
    from corekit.data.sources import file_documents

    paragraphs = [f"paragraph {i} " + "word " * 40 + "\n" for i in range(200)]
    text = "\n".join(paragraphs)  # paragraphs separated by blank lines
    path = tmp_path / "big.txt"
    path.write_text(text)
    docs = list(file_documents([str(path)], max_document_bytes=2000))
    assert len(docs) > 5
    assert "".join(d.text for d in docs) == text  # nothing lost or repeated
    assert all(d.text.endswith("\n\n") for d in docs[:-1])  # cut right after a blank line
    assert all(len(d.text) < 2000 + 300 for d in docs)
    assert docs[0].origin.endswith("big.txt#0")
    small = list(file_documents([str(path)], max_document_bytes=10**9))
    assert len(small) == 1 and small[0].text == text


def test_a_file_without_blank_lines_is_still_cut(tmp_path):
    from corekit.data.sources import file_documents

    path = tmp_path / "one-line.txt"
    path.write_text("x" * 50_000)
    docs = list(file_documents([str(path)], max_document_bytes=1000))
    assert "".join(d.text for d in docs) == "x" * 50_000
    assert max(len(d.text) for d in docs) <= 4000
