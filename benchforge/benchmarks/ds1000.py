"""DS-1000 (tier 2): data-science completions checked by each problem's own ``code_context``.

Rows are the Hub dataset ``xlangai/DS-1000`` (the simplified format of github.com/xlang-ai/
DS-1000, ``data/ds1000.jsonl.gz``): ``prompt``, ``reference_code``, ``code_context`` and
``metadata`` (``problem_id``, ``library_problem_id``, ``library``, ``test_case_cnt``,
``perturbation_type``, ``perturbation_origin_id``); staged by ``benchforge stage``
(``benchmark.version``: ``main`` or a dataset commit).

Generation: the row's ``prompt`` verbatim: in chat mode the user message after DS-1000's system
message for chat models (``benchmark.variant``: null, the default one; ``gpt4o``, the one its
script gives GPT-4o), ``max_tokens`` 1024; in completion mode the raw text. Generation stops at
``</code>`` and ``# SOLUTION END`` in both, as in DS-1000's generation scripts. The answer
goes through ``test_ds1000.py``'s ``postprocess``: cut at the
first ``</code>``, every `````python`` removed, cut at the next `````, cut at
``\\nEND SOLUTION``, every ``<code>`` removed (reasoning is split off first). Execution
(``test_ds1000.py`` and ``execution.py``): the program ``code_context + "\\n" + "code = " +
repr(answer) + "\\ntest_execution(code)\\n"`` (+ ``"test_string(code)\\n"`` when the context
defines it, else ``"\\n"``), executed in empty globals in a fresh temporary directory with
output swallowed and no reliability guard, with ``TF_CPP_MIN_LOG_LEVEL=3`` and
``CUDA_VISIBLE_DEVICES=-1`` set (``test_ds1000.py`` sets them for its pool), under a
``timeout`` alarm (120 s; ``benchmark.timeout_s``): ``passed`` iff it raises nothing,
``timed out`` when the alarm fires, else ``failed: <exception>``. The official runs it inside a
process-pool worker, so a sample that kills its process, or that the alarm cannot stop, leaves
no verdict (the evaluation aborts or hangs); in benchforge's sandbox such a sample fails (its
exit, or the wall limit ``timeout + 1`` s). Each results row carries the problem's library as
``category`` and its ``perturbation_type`` as ``perturbation``: ``metrics.json`` breaks pass@k
down per library and per perturbation, as ``test_ds1000.py`` prints them.
Tier 2: scoring waits for the readiness gate, which checks the pinned versions
(``benchmark.pins``: those of DS-1000's ``environment.yml``) of every third-party module the
loaded problems' ``code_context`` imports, plus each problem's ``metadata.library``.

Offline seaborn datasets: some Matplotlib problems build their data with seaborn's
``load_dataset("<name>")``, which seaborn 0.13.2 (``seaborn/utils.py``) reads from
``$SEABORN_DATA/<name>.csv`` and otherwise downloads from
``raw.githubusercontent.com/mwaskom/seaborn-data/master/<name>.csv``. Compute nodes and the
sandbox are offline, so ``benchforge stage`` fetches each dataset the staged problems name into
``<data.root>/ds1000/seaborn-data/`` (the same URL seaborn uses, under ``data.mirror``), the
gate requires those files, and the sandbox sees that folder read-only as ``SEABORN_DATA``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from benchforge.answers.thinking import split_thinking
from benchforge.benchmarks import (
    Benchmark,
    Dataset,
    Download,
    Task,
    pin_table,
    python_requirement,
    read_dataset_rows,
    register,
    staged_commit,
)
from benchforge.config import Mode
from benchforge.errors import BenchforgeError
from benchforge.prompts import Prompt
from benchforge.rundir import sha256_file
from benchforge.sandbox.types import CheckProgram

SEMANTICS = "github.com/xlang-ai/DS-1000 test_ds1000.py + execution.py"
HF_DATASET = "xlangai/DS-1000"
DATA_DIR = "ds1000"
DATA_FILE = "test.jsonl"  # the Hub file (hf://datasets/xlangai/DS-1000/test.jsonl)
ROW_FIELDS = ("prompt", "reference_code", "code_context", "metadata")
METADATA_FIELDS = ("problem_id", "library")
STOPS = ["</code>", "# SOLUTION END"]
# DS-1000's system messages for chat models (its OpenAI generation script's default_prompt)
SYSTEM_PROMPTS = {
    None: "Write a short code following the given format and indentation. Place the executable "
          "code between <code> and </code> tags, without any other non-executable things.",
    "gpt4o": "Only provide the code completion needed. Don't repeat the context code.",
}
CHAT_MAX_TOKENS = 1024
TIMEOUT_S = 120.0  # test_ds1000.py: check_correctness(test_program, timeout=120)
# test_ds1000.py sets these before its process pool starts ("disable tensorflow logging and no
# GPU"), so every program runs with them
ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "-1"}
# metadata.library -> the module its problems import
LIBRARY_MODULES = {"Numpy": "numpy", "Pandas": "pandas", "Scipy": "scipy",
                   "Sklearn": "sklearn", "Matplotlib": "matplotlib", "Pytorch": "torch",
                   "Tensorflow": "tensorflow"}
# imported module -> the distribution DS-1000's environment.yml installs it from (where the
# names differ); any other module's distribution has its name
DISTRIBUTIONS = {"sklearn": "scikit-learn", "tensorflow": "tensorflow-cpu",
                 "mpl_toolkits": "matplotlib", "PIL": "pillow", "yaml": "pyyaml"}
# seaborn 0.13.2 utils.DATASET_SOURCE, as a path under data.mirror (raw.githubusercontent.com)
SEABORN_SOURCE = "mwaskom/seaborn-data/master"
SEABORN_DIR = "ds1000/seaborn-data"  # under data.root
_IMPORT = re.compile(r"^[ \t]*(?:from[ \t]+([A-Za-z_]\w*)[\w.]*[ \t]+import\b"
                     r"|import[ \t]+([^#\n;]+))", re.MULTILINE)
_LOAD_DATASET = re.compile(r"\bload_dataset\(\s*['\"]([A-Za-z0-9_.-]+)['\"]")
# The readiness gate's known-good problem, shaped like a row's code_context and answer.
SMOKE_CONTEXT = ("import copy\n\ndef test_execution(solution: str):\n"
                 "    env = {'a': [1, 2]}\n    exec(solution, env)\n"
                 "    assert env['result'] == 3\n")
SMOKE_ANSWER = "result = sum(a)\n"


def postprocess(code: str) -> str:
    """``test_ds1000.py``'s ``postprocess`` of a generated answer."""
    code = code.split("</code>")[0]
    code = code.replace("```python", "")
    code = code.split("```")[0]
    code = code.split("\nEND SOLUTION")[0]
    return code.replace("<code>", "")


def test_program(code_context: str, code: str) -> str:
    """The program ``test_ds1000.py`` executes for ``code`` (a postprocessed answer)."""
    return (code_context + "\n" + f"code = {code!r}\n" + "test_execution(code)\n"
            + ("test_string(code)\n" if "test_string(" in code_context else "\n"))


def imported_modules(code_context: str) -> set[str]:
    """The top-level names of the non-stdlib modules ``code_context`` imports, anywhere in its
    text (its ``exec_context`` string, which the sample runs, repeats imports of its own)."""
    names: set[str] = set()
    for match in _IMPORT.finditer(code_context):
        if match.group(1):
            names.add(match.group(1))
            continue
        for part in match.group(2).split(","):
            head = part.strip().split(" ")[0].split(".")[0]
            if head.isidentifier():
                names.add(head)
    return {n for n in names if n not in sys.stdlib_module_names and n != "__future__"}


def seaborn_datasets(code_context: str) -> set[str]:
    """The seaborn example datasets ``code_context`` loads by name (``load_dataset("...")``)."""
    return set(_LOAD_DATASET.findall(code_context))


def read_rows(path: Path) -> list[dict[str, Any]]:
    """DS-1000 rows: JSON lines (``.jsonl`` or ``.jsonl.gz``), each checked for its fields."""

    def missing_metadata(row: dict[str, Any]) -> list[str]:
        meta = row.get("metadata")
        return [f"metadata.{f}" for f in METADATA_FIELDS
                if not isinstance(meta, dict) or f not in meta]

    return read_dataset_rows(path, ROW_FIELDS, "DS-1000", missing_metadata)


@register("ds1000")
class DS1000(Benchmark):
    """DS-1000 graded by each problem's ``code_context`` as ``test_ds1000.py`` does (tier 2: after
    the readiness gate); see the module docstring."""

    per_test_time_limits = True  # the official fixed limit
    tier = 2
    container = "ds1000.def"

    def downloads(self) -> list[Download]:
        version = str(self.cfg.version)
        return [Download("hf_dataset", HF_DATASET, DATA_DIR, files=(DATA_FILE,),
                         revision=None if version == "main" else version)]

    def load(self) -> Dataset:
        path = (Path(str(self.cfg.path)).expanduser() if self.cfg.get("path")
                else self.data_root / DATA_DIR / DATA_FILE)
        if not path.is_file():
            raise BenchforgeError(
                f"{path}: DS-1000 data not found; run `benchforge stage benchmark="
                f"{self.cfg.name}` (HF dataset {HF_DATASET}@{self.cfg.version}) or set "
                "data.root / benchmark.path")
        rows = read_rows(path)
        tasks = [Task(f"DS1000/{r['metadata']['problem_id']}", r) for r in rows]
        ids = [t.task_id for t in tasks]
        if len(set(ids)) != len(ids):
            raise BenchforgeError(f"{path}: duplicate metadata.problem_id")
        self._all_datasets = sorted(set().union(
            *(seaborn_datasets(str(r["code_context"])) for r in rows)))
        tasks = self.limited(tasks)
        modules: set[str] = set()
        datasets: set[str] = set()
        for task in tasks:
            library = str(task.data["metadata"]["library"])
            modules.add(LIBRARY_MODULES.get(library, library.lower()))
            modules |= imported_modules(str(task.data["code_context"]))
            datasets |= seaborn_datasets(str(task.data["code_context"]))
        self._modules = sorted(modules)
        self._datasets = sorted(datasets)
        digest = sha256_file(path)
        return Dataset(tasks=tasks, path=path, sha256=digest,
                       version=str(self.cfg.version),
                       extra={"hf_dataset": HF_DATASET, "semantics": SEMANTICS,
                              "hf_commit": staged_commit(path, digest),
                              "seaborn_datasets": self._staged_datasets()})

    def prompt(self, task: Task, mode: str) -> Prompt:
        if mode == Mode.completion:
            return Prompt(text=task.data["prompt"])
        variant = self.cfg.get("variant")
        if variant not in SYSTEM_PROMPTS:
            raise BenchforgeError(f"benchmark.variant={variant}: expected null (DS-1000's "
                                  "default system message) or gpt4o")
        return Prompt(messages=(("system", SYSTEM_PROMPTS[variant]),
                                ("user", task.data["prompt"])))

    def stop_sequences(self, mode: str) -> list[str]:
        return list(STOPS)

    def max_tokens(self, mode: str) -> int | None:
        return CHAT_MAX_TOKENS if mode != Mode.completion else None

    def reference_completion(self, task: Task, mode: str) -> str:
        """The oracle's answer: a fixture row's ``fixture_completion`` (not an official field;
        tests only), else ``reference_code``."""
        completion = task.data.get("fixture_completion")
        return str(completion if completion is not None else task.data["reference_code"])

    def extract_code(self, task: Task, completion: str, mode: str) -> str:
        return postprocess(split_thinking(completion)[0])

    def rescoring_code(self, task: Task, row: dict[str, Any]) -> str | None:
        """An answers row: its ``code`` (``test_ds1000.py``'s answers file; of a list, the
        first) postprocessed, else ``solution`` as is, else ``completion`` postprocessed."""
        code = row.get("code")
        if isinstance(code, list) and code:
            code = code[0]
        if isinstance(code, str):
            return postprocess(code)
        return super().rescoring_code(task, row)

    def reference_code(self, task: Task) -> str | None:
        return str(task.data["reference_code"])

    @property
    def timeout_s(self) -> float:
        """Seconds per program: ``benchmark.timeout_s``, else the official 120
        (``test_ds1000.py``'s ``check_correctness(..., timeout=120)``).
        """
        limit = self.cfg.get("timeout_s")
        return float(limit) if limit is not None else TIMEOUT_S

    def check_program(self, task: Task, code: str) -> CheckProgram:
        """``test_ds1000.py``'s program, in its environment (:data:`ENVIRONMENT`, plus
        ``SEABORN_DATA`` where the problem loads a seaborn dataset)."""
        env = dict(ENVIRONMENT)
        if seaborn_datasets(str(task.data["code_context"])):
            env["SEABORN_DATA"] = str(self.seaborn_dir)
        return CheckProgram(code=test_program(task.data["code_context"], code),
                            bare_globals=True, time_limit_s=self.timeout_s + 1, env=env)

    @property
    def seaborn_dir(self) -> Path:
        """Where ``benchforge stage`` puts the seaborn datasets the problems load
        (``<data.root>/ds1000/seaborn-data``), seen read-only in the sandbox."""
        return self.data_root / SEABORN_DIR

    def _staged_datasets(self) -> dict[str, str | None]:
        """sha256 of each seaborn dataset the loaded problems load (None: not staged)."""
        files = {name: self.seaborn_dir / f"{name}.csv" for name in self._datasets}
        return {name: sha256_file(f) if f.is_file() else None for name, f in files.items()}

    def smoke_program(self) -> CheckProgram:
        """The readiness gate's known-good program: imports every module the loaded problems
        import and runs a tiny problem through the same test program as a sample.
        """
        imports = "".join(f"import {m}\n" for m in self._needed()[0])
        return CheckProgram(code=test_program(imports + SMOKE_CONTEXT, SMOKE_ANSWER),
                            bare_globals=True, time_limit_s=self.timeout_s + 1)

    def _needed(self) -> tuple[list[str], list[str]]:
        """The modules and the seaborn datasets the loaded problems need."""
        if not hasattr(self, "_modules"):
            self.load()
        return self._modules, self._datasets

    def requirements(self) -> list[dict[str, Any]]:
        """What the readiness gate checks in the sandbox: each module the loaded problems
        import (its distribution at its pin, else importable), then each seaborn dataset they
        load (staged under :attr:`seaborn_dir`)."""
        pins = pin_table(self.cfg.get("pins"))
        modules, datasets = self._needed()
        needs: list[dict[str, Any]] = []
        seen: set[str] = set()
        for module in modules:
            dist = DISTRIBUTIONS.get(module, module)
            if dist.lower() in seen:
                continue
            seen.add(dist.lower())
            if dist.lower() in pins:
                needs.append(python_requirement(*pins[dist.lower()]))
            else:
                needs.append({"kind": "module", "name": module, "install":
                              f"a distribution providing the module {module} (not pinned: "
                              "add it to benchmark.pins)"})
        for name in datasets:
            needs.append({"kind": "file", "name": f"seaborn dataset {name}",
                          "paths": [str(self.seaborn_dir / f"{name}.csv")],
                          "install": f"benchforge stage benchmark={self.cfg.name} on the "
                                     "login node (compute nodes are offline)"})
        return needs

    def sandbox_paths(self) -> list[str]:
        """The staged seaborn datasets' folder, when the loaded problems load any."""
        return [str(self.seaborn_dir)] if self._needed()[1] and self.seaborn_dir.is_dir() \
            else []

    def dependent_downloads(self) -> list[Download]:
        """The seaborn datasets the staged problems (all of them, whatever
        ``benchmark.limit``) load by name, from the URL seaborn itself would fetch them from
        (``seaborn/utils.py`` ``DATASET_SOURCE``)."""
        self.load()
        return [Download("url", f"{SEABORN_SOURCE}/{name}.csv", f"{SEABORN_DIR}/{name}.csv")
                for name in self._all_datasets]

    def result_fields(self, task: Task, extra: dict[str, Any]) -> dict[str, Any]:
        """The problem's library as ``category`` and its ``perturbation_type`` as
        ``perturbation``: the two breakdowns ``test_ds1000.py`` prints."""
        perturbation = task.data["metadata"].get("perturbation_type")
        return {"category": str(task.data["metadata"]["library"]),
                "perturbation": None if perturbation is None else str(perturbation)}


