"""evals.output: durable appends, torn last lines, corrupt lines, locking and the run-config guard."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from evals.errors import EvalError
from evals.output import JsonlAppender, SampleStore, check_run_config, read_records


@pytest.fixture
def output_log(caplog):
    """What ``evals.output`` logs, caught at that logger itself (not only through propagation to the root)."""
    lg = logging.getLogger("evals.output")
    lg.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="evals.output"):
            yield caplog
    finally:
        lg.removeHandler(caplog.handler)


def test_append_and_read(tmp_path):
    p = tmp_path / "o.jsonl"
    with JsonlAppender(p) as w:
        w.append({"id": "a", "x": 1})
        w.append({"id": "b", "text": "ünï\ncode"})
    assert read_records(p) == [{"id": "a", "x": 1}, {"id": "b", "text": "ünï\ncode"}]
    assert p.read_text().count("\n") == 2


def test_torn_last_line_is_ignored_by_reader_and_cut_by_writer(tmp_path, output_log):
    p = tmp_path / "o.jsonl"
    good = json.dumps({"id": "a"}) + "\n"
    p.write_text(good + '{"id": "b", "gener')
    assert read_records(p) == [{"id": "a"}]
    # a complete JSON object without its newline still counts as torn (the write did not finish)
    p.write_text(good + '{"id": "b"}')
    assert read_records(p) == [{"id": "a"}]
    with JsonlAppender(p) as w:
        assert "torn write" in output_log.text
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
        code = (
            "import sys; from evals.output import JsonlAppender; from evals.errors import EvalError\n"
            "try:\n    JsonlAppender(sys.argv[1])\nexcept EvalError as e:\n    print(e); sys.exit(3)\n"
        )
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


def _ids(path):
    return [r["id"] for r in read_records(path)]


def test_complete_seed_file_is_rewritten_in_input_order_byte_for_byte(tmp_path):
    s = SampleStore(tmp_path)
    for rid in ("c", "a", "x"):  # finish order; "x" is not part of this run (kept, after the run's ids)
        s.append(0, {"id": rid, "text": "ünï"})
    s.close()
    before = set((tmp_path / "output-rs0.jsonl").read_bytes().splitlines(keepends=True))
    assert s.put_in_order(0, ["a", "b", "c"]) is False  # "b" missing: not complete, not touched
    assert _ids(tmp_path / "output-rs0.jsonl") == ["c", "a", "x"]
    s.append(0, {"id": "b", "text": "ünï"})
    assert s.put_in_order(0, ["a", "b", "c"]) is True
    after = (tmp_path / "output-rs0.jsonl").read_bytes().splitlines(keepends=True)
    assert [json.loads(x)["id"] for x in after] == ["a", "b", "c", "x"]
    assert before <= set(after)  # the very same lines
    s.append(0, {"id": "y"})  # the writer follows the new file
    s.close()
    assert _ids(tmp_path / "output-rs0.jsonl") == ["a", "b", "c", "x", "y"]
    assert not list(tmp_path.glob(".*.tmp"))


def test_put_in_order_leaves_repeated_ids_alone(tmp_path, output_log):
    p = tmp_path / "output-rs0.jsonl"
    p.write_text("".join(json.dumps({"id": i}) + "\n" for i in ("b", "a", "b")))
    assert SampleStore(tmp_path).put_in_order(0, ["a", "b"]) is True
    assert _ids(p) == ["b", "a", "b"] and "repeats an id" in output_log.text


def test_a_killed_rewrite_leaves_the_old_file_and_its_temp_is_cleaned(tmp_path):
    p = tmp_path / "output-rs0.jsonl"
    p.write_text(json.dumps({"id": "b"}) + "\n" + json.dumps({"id": "a"}) + "\n")
    stale = tmp_path / ".output-rs0.jsonl.999999.tmp"  # what a kill -9 during a rewrite leaves behind
    stale.write_text(json.dumps({"id": "a"}) + "\n")
    assert _ids(p) == ["b", "a"]  # readers see the old, whole file
    s = SampleStore(tmp_path)
    assert s.put_in_order(0, ["a", "b"]) and _ids(p) == ["a", "b"]
    s.close()
    assert not stale.exists()


def test_rewrite_is_atomic_under_sigkill(tmp_path):
    """Kill -9 a process while it rewrites a big file over and over: the file is always one whole version."""
    p = tmp_path / "output-rs0.jsonl"
    ids = [f"p{i}" for i in range(2000)]
    p.write_text("".join(json.dumps({"id": i, "pad": "x" * 200}) + "\n" for i in reversed(ids)))
    code = (
        "import sys, random; from evals.output import SampleStore\n"
        "s = SampleStore(sys.argv[1]); ids = sys.argv[2].split(',')\n"
        "print('go', flush=True)\n"
        "while True:\n    random.shuffle(ids); s.put_in_order(0, ids)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path), ",".join(ids)], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"go"
    import time

    time.sleep(1.0)
    proc.kill()
    proc.wait(30)
    assert sorted(_ids(p)) == sorted(ids)  # every line there, once, whichever version won
    assert SampleStore(tmp_path).put_in_order(0, ids) and _ids(p) == ids
    assert not list(tmp_path.glob(".*.tmp"))
