"""The EvalPlus expected-output store: one file per task, each output pickled on its own (large
ones compressed), read back one input at a time by the sandbox worker."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from benchforge.benchmarks import _groundtruth, _store

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "benchforge" / "sandbox" / "_worker.py"

CODE = '''
def f(n, x):
    if n < 0:
        return None
    return ("ab" * n, [float(x)] * 3, {"k": (n, x)})
'''


@pytest.fixture()
def worker():
    spec = importlib.util.spec_from_file_location("benchforge_worker_store", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_one(tmp_path: Path, monkeypatch, base: list, plus: list, not_none=()) -> Path:
    row = {"task_id": "T/1", "prompt": "", "canonical_solution": CODE, "entry_point": "f",
           "base_input": base, "plus_input": plus}
    monkeypatch.setattr(_groundtruth, "ROWS", [row])
    monkeypatch.setattr(_groundtruth, "STATE", {"not_none": list(not_none),
                                                "build": str(tmp_path)})
    task_id, times = _groundtruth.compute(0)
    assert task_id == "T/1" and len(times["base"]) == len(base)
    return tmp_path / _groundtruth.fixture_name("T/1")


def test_each_output_reads_back_equal_to_evalplus_trusted_exec(tmp_path, monkeypatch,
                                                                worker) -> None:
    from evalplus.gen.util import trusted_exec

    big = (1 << 20) // 2 + 10  # "ab" * big pickles to > COMPRESS_FROM: stored compressed
    base, plus = [[1, 2], [3, 4]], [[0, 1], [big, 5], [2, 7]]
    path = build_one(tmp_path, monkeypatch, base, plus)
    worker.load_fixture(str(path))
    data = worker.FIXTURE["data"]
    for suite, inputs in (("base", base), ("plus", plus)):
        official = trusted_exec(CODE, inputs, "f")
        assert data[suite]["inputs"] == inputs
        assert len(data[suite]["times"]) == len(inputs)
        stored = worker.ExpectedOutputs(worker.FIXTURE["fd"], data[suite]["offsets"])
        assert len(stored) == len(inputs)
        assert [stored[i] for i in range(len(inputs))] == official
        assert [stored[i] for i in reversed(range(len(inputs)))] == official[::-1]
    codecs = [codec for _, _, codec in data["plus"]["offsets"]]
    assert codecs == [0, 1, 0]  # only the large one is compressed
    _, length, _ = data["plus"]["offsets"][1]
    assert length < big  # and it is smaller than the raw string alone
    assert data["base"]["first_float"] is None  # a tuple is not "floats" for evalplus


def test_first_float_and_not_none_follow_evalplus(tmp_path, monkeypatch, worker) -> None:
    from evalplus.eval import is_floats
    from evalplus.gen.util import trusted_exec

    code = "def f(x):\n    return None if x < 0 else ([1.5, 2.5] if x > 1 else x)\n"
    row = {"task_id": "T/2", "prompt": "", "canonical_solution": code, "entry_point": "f",
           "base_input": [[0], [1], [2], [3]], "plus_input": [[-1], [5]]}
    monkeypatch.setattr(_groundtruth, "ROWS", [row])
    for not_none in ([], ["f"]):
        monkeypatch.setattr(_groundtruth, "STATE", {"not_none": not_none,
                                                    "build": str(tmp_path)})
        _groundtruth.compute(0)
        path = tmp_path / _groundtruth.fixture_name("T/2")
        worker.FIXTURE.clear()
        worker.load_fixture(str(path))
        for suite in ("base", "plus"):
            official = trusted_exec(code, row[f"{suite}_input"], "f",
                                    output_not_none=bool(not_none))
            entry = worker.FIXTURE["data"][suite]
            stored = worker.ExpectedOutputs(worker.FIXTURE["fd"], entry["offsets"])
            assert [stored[i] for i in range(len(stored))] == official
            first = next((i for i, v in enumerate(official) if is_floats(v)), None)
            assert entry["first_float"] == first
            # the first floats output (base #2, plus #1); not_none makes every output a bool
            assert first == (None if not_none else {"base": 2, "plus": 1}[suite])


def test_a_truncated_store_file_is_an_error_not_a_value(tmp_path, monkeypatch, worker) -> None:
    path = build_one(tmp_path, monkeypatch, [[1, 2]], [[2, 3]])
    worker.load_fixture(str(path))
    offsets = worker.FIXTURE["data"]["plus"]["offsets"]
    _, length, codec = offsets[0]
    stored = worker.ExpectedOutputs(worker.FIXTURE["fd"],
                                    [[path.stat().st_size - 4, length, codec]])
    with pytest.raises(OSError, match="truncated"):
        stored[0]


def test_a_damaged_store_is_named_before_any_sample_runs(tmp_path) -> None:
    """A truncated, edited or missing task file (or index entry) is found by the host from the
    sizes and sha256 the build records, instead of failing inside the sandbox as the sample's
    own failure (a corrupted store made every affected sample 'fail')."""
    import json

    rows = [{"task_id": f"T/{i}", "prompt": "", "canonical_solution": CODE, "entry_point": "f",
             "base_input": [[i, 2]], "plus_input": [[i + 1, 3]]} for i in range(3)]
    source = tmp_path / "data.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    target = tmp_path / "store"
    _groundtruth.build("humaneval", source, target, 1)
    index = json.loads((target / "index.json").read_text())
    ids = [r["task_id"] for r in rows]
    assert all({"bytes", "sha256"} <= set(index[t]) for t in ids)
    assert _store.store_problem(target, index, ids) is None

    one = target / index["T/1"]["file"]
    good = one.read_bytes()
    one.write_bytes(good[:-5])
    assert _store.store_problem(target, index, ids) == (
        f"T_1.pkl has {len(good) - 5} bytes, not {len(good)}")
    one.write_bytes(good[:10] + bytes([good[10] ^ 1]) + good[11:])  # same size, one bit off
    assert "T_1.pkl does not match its sha256" in _store.store_problem(target, index, ids)
    # a store built before sizes were recorded: a cut file's trailer points past its end
    older = {t: {"file": e["file"], "times": e["times"]} for t, e in index.items()}
    one.write_bytes(good)
    assert _store.store_problem(target, older, ids) is None
    one.write_bytes(good[:len(good) // 2])
    assert _store.store_problem(target, older, ids) == \
        f"T_1.pkl is truncated ({len(good) // 2} bytes)"
    one.unlink()
    assert _store.store_problem(target, index, ids) == "T_1.pkl is missing"
    assert _store.store_problem(target, index, ["T/0"]) is None  # only the tasks asked
    assert _store.store_problem(target, index, ["T/9"]) == "index.json has no entry for T/9"


def test_a_full_disk_is_reported_as_the_disk_not_the_canonical_solution(tmp_path, monkeypatch
                                                                        ) -> None:
    import errno

    def full(value):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(_groundtruth.StoreWriteError) as caught:
        _groundtruth.run_canonical(CODE, [[1, 2]], "f", False, full)
    assert caught.value.args[0].errno == errno.ENOSPC
    monkeypatch.setattr(_groundtruth.SuiteWriter, "add", lambda self, value: full(value))
    with pytest.raises(OSError, match="No space left") as raised:
        build_one(tmp_path, monkeypatch, [[1, 2]], [[2, 3]])
    assert not isinstance(raised.value, RuntimeError)  # not "the canonical solution raised"
