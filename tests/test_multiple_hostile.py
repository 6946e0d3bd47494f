"""The hostile battery for compiled languages: MultiPL-E programs run through the same runner
and sandbox as scored samples (tests/_fs_battery.py's pattern, for C++ and Java).

- a C++ fork bomb whose children leave the process group (setsid) and sleep: bounded by the
  sandbox's process limit, every child is gone once the verdict is in, the worker still works;
- a Java program writing outside its temp dir (a host dir, $HOME, the run dir, /usr) and
  copying a planted secret to /tmp: nothing changes on the host.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from pathlib import Path

import pytest
from _fs_battery import snapshot

from benchforge.benchmarks import load_benchmark
from benchforge.config import compose
from benchforge.sandbox import Limits, SandboxPool
from benchforge.sandbox.outer import mode_available

MODES = [m for m in ("bwrap", "userns") if mode_available(m)]
LIMITS = Limits(timeout_s=10.0, memory_mb=4096, stack_mb=64, cpu_s=60, nofile=256, nproc=64,
                fsize_mb=16, max_output_bytes=100_000)
BOMB = r"""
#include <unistd.h>
#include <signal.h>
#include <cstdlib>
int main() {
    int forks = 0;
    for (;;) {
        pid_t pid = fork();
        if (pid < 0) break;
        if (pid == 0) { setsid(); signal(SIGTERM, SIG_IGN); for (;;) pause(); }
        if (++forks > 5000) break;
    }
    return forks >= 8 && forks < 1000 ? 0 : 1;  // it did fork, and was stopped
}
"""


def bomb_processes(settle_s: float = 3.0) -> list[int]:
    """Host pids still running the bomb binary (every MultiPL-E binary is named program),
    zombies aside, after giving SIGKILLs already sent ``settle_s`` to land."""
    deadline = time.monotonic() + settle_s
    while True:
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                name, state = stat.split("(", 1)[1].rsplit(")", 1)
                if name == "program" and state.split()[0] != "Z":
                    found.append(int(entry))
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


@pytest.mark.parametrize("mode", MODES)
def test_cpp_fork_bomb_is_contained(mode: str) -> None:
    cpp = load_benchmark(compose(["benchmark=multiple_cpp"]))
    with SandboxPool(mode, LIMITS, 1, read_only=tuple(cpp.sandbox_paths())) as pool:
        result = pool.run(cpp.runner_program(BOMB))
        # compiled and ran; forks stopped at the process limit, far below 1000
        assert result.passed, result.detail
        assert bomb_processes() == []  # the setsid children were swept with the sample
        ok = pool.run(cpp.runner_program("int main() { return 0; }\n"))
        assert ok.passed, ok.detail  # the worker survived


@pytest.mark.parametrize("mode", MODES)
def test_java_writes_outside_tmp_are_contained(mode: str, tmp_path: Path) -> None:
    marker = f"bf-java-{secrets.token_hex(4)}"
    secret = f"TOPSECRET-{marker}"
    run_root, home = tmp_path / "runs", tmp_path / "home"
    cell = run_root / "default" / "oracle" / "multiple_java"
    cell.mkdir(parents=True)
    home.mkdir()
    planted = run_root / "secret.txt"
    planted.write_text(secret)
    planted.chmod(0o644)
    victim = cell / "results.jsonl"
    victim.write_text("keep me\n")
    exfil = Path(tempfile.gettempdir()) / f"{marker}-exfil"
    targets = [tmp_path / "evil", home / ".bashrc", victim, Path(f"/usr/{marker}")]
    before = snapshot([tmp_path])
    writes = "\n".join(
        f'        failures += tryWrite("{t}");' for t in targets)
    java = f"""
import java.io.*;
import java.nio.file.*;
class Problem {{
    static int tryWrite(String path) {{
        try (FileWriter w = new FileWriter(path)) {{ w.write("evil"); return 1; }}
        catch (IOException e) {{ return 0; }}
    }}
    public static void main(String[] args) throws Exception {{
        int failures = 0;
{writes}
        try {{
            String data = new String(Files.readAllBytes(Paths.get("{planted}")));
            Files.write(Paths.get("{exfil}"), data.getBytes());
            failures += 1;
        }} catch (IOException e) {{ }}
        Files.write(Paths.get("/tmp/{marker}-own"), "mine".getBytes());  // its own /tmp: fine
        System.exit(failures);
    }}
}}
"""
    bench = load_benchmark(compose(["benchmark=multiple_java"]))
    with SandboxPool(mode, LIMITS, 1, read_only=tuple(bench.sandbox_paths())) as pool:
        result = pool.run(bench.runner_program(java))
    assert result.passed, result.detail  # Java ran, and every write outside tmp failed
    assert secret not in result.detail
    assert snapshot([tmp_path]) == before
    assert not exfil.exists() and not Path(f"/usr/{marker}").exists()
    assert not list(Path(tempfile.gettempdir()).glob(f"{marker}*"))
