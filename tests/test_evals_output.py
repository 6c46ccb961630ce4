"""evals.output: durable appends, torn last lines, corrupt lines, locking and the run-config guard."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from evals.errors import EvalError
from evals.output import JsonlAppender, SampleStore, check_run_config, read_records


def test_append_and_read(tmp_path):
    p = tmp_path / "o.jsonl"
    with JsonlAppender(p) as w:
        w.append({"id": "a", "x": 1})
        w.append({"id": "b", "text": "ünï\ncode"})
    assert read_records(p) == [{"id": "a", "x": 1}, {"id": "b", "text": "ünï\ncode"}]
    assert p.read_text().count("\n") == 2


def test_torn_last_line_is_ignored_by_reader_and_cut_by_writer(tmp_path, capsys):
    p = tmp_path / "o.jsonl"
    good = json.dumps({"id": "a"}) + "\n"
    p.write_text(good + '{"id": "b", "gener')
    assert read_records(p) == [{"id": "a"}]
    # a complete JSON object without its newline still counts as torn (the write did not finish)
    p.write_text(good + '{"id": "b"}')
    assert read_records(p) == [{"id": "a"}]
    with JsonlAppender(p) as w:
        assert "torn write" in capsys.readouterr().err
        w.append({"id": "c"})
    assert p.read_text() == good + '{"id": "c"}\n'
    # an invalid last line that does end in a newline is torn too (e.g. zero bytes after a crash)
    p.write_text(good + "\0\0\0\n")
    assert read_records(p) == [{"id": "a"}]


def test_corrupt_middle_line_is_a_clear_error(tmp_path):
    p = tmp_path / "o.jsonl"
    p.write_text('{"id": "a"}\nnot json\n{"id": "c"}\n')
    with pytest.raises(EvalError, match=r"o\.jsonl:2: corrupt output line.*delete that line"):
        read_records(p)


def test_second_writer_on_the_same_file_is_refused(tmp_path):
    p = tmp_path / "o.jsonl"
    with JsonlAppender(p):
        code = ("import sys; from evals.output import JsonlAppender; from evals.errors import EvalError\n"
                "try:\n    JsonlAppender(sys.argv[1])\nexcept EvalError as e:\n    print(e); sys.exit(3)\n")
        r = subprocess.run([sys.executable, "-c", code, str(p)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 3 and "being written by another running process" in r.stdout
    JsonlAppender(p).close()  # free again once the first writer is gone


def test_sample_store_dedupes_and_tracks_done(tmp_path):
    s = SampleStore(tmp_path)
    s.append(0, {"id": "a", "v": 1})
    s.append(1, {"id": "a", "v": 2})
    s.append(0, {"id": "b", "v": 3})
    s.close()
    (tmp_path / "output-rs0.jsonl").open("a").write(json.dumps({"id": "a", "v": 9}) + "\n")  # a repeat
    assert s.done_ids(0) == {"a", "b"} and s.done_ids(1) == {"a"} and s.done_ids(2) == set()
    assert [(r["id"], r["seed"], r["v"]) for r in s.all_records()] == [("a", 0, 1), ("b", 0, 3), ("a", 1, 2)]


def test_run_config_guard(tmp_path):
    cfg = {"model": "m1", "temperature": 1.0}
    check_run_config(tmp_path, cfg)
    check_run_config(tmp_path, {"model": "m2", "temperature": 1.0})  # no samples yet: new settings accepted
    assert json.loads((tmp_path / "run-config.json").read_text())["model"] == "m2"
    SampleStore(tmp_path).append(0, {"id": "a"})
    check_run_config(tmp_path, {"model": "m2", "temperature": 1.0})
    with pytest.raises(EvalError, match=r"temperature=1\.0, this run has temperature=0\.6.*another --output-dir"):
        check_run_config(tmp_path, {"model": "m2", "temperature": 0.6}, write=False)
