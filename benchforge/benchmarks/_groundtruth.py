"""Expected outputs of an EvalPlus dataset, as evalplus.evaluate.get_groundtruth makes them.

    python -m benchforge.benchmarks._groundtruth <humaneval|mbpp> <dataset file> <out.pkl>

Runs each task's canonical solution (trusted dataset code) with evalplus's trusted_exec on its
base and plus inputs, recording per-input times on this host; writes one pickle atomically.
Kept out of the benchforge process so dataset code never runs inside it.
"""

from __future__ import annotations

import os
import pickle
import sys
import tempfile
from pathlib import Path


def main() -> None:
    from evalplus.eval._special_oracle import MBPP_OUTPUT_NOT_NONE_TASKS
    from evalplus.gen.util import trusted_exec

    from benchforge.benchmarks._evalplus import read_tasks

    kind, source, target = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    not_none = MBPP_OUTPUT_NOT_NONE_TASKS if kind == "mbpp" else []
    rows, _ = read_tasks(source, kind)
    truth = {}
    for row in rows:
        code = row["prompt"] + row["canonical_solution"]
        oracle = {}
        for suite in ("base", "plus"):
            oracle[suite], oracle[f"{suite}_time"] = trusted_exec(
                code, row[f"{suite}_input"], row["entry_point"], record_time=True,
                output_not_none=row["entry_point"] in not_none)
        truth[row["task_id"]] = oracle
    # named after its target and this pid, so that one left by a killed run is recognised
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.{os.getpid()}.",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(truth, fh)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)  # a failed write (full disk) leaves nothing behind
        raise


if __name__ == "__main__":
    main()
