"""The hostile filesystem battery, for every sandbox mode that claims ``filesystem``.

Used by tests/test_sandbox_fs.py in-process (as root in CI) and as a script under an
unprivileged uid (``python tests/_fs_battery.py MODE [MODE ...]`` prints one JSON line):

- plants secrets in a run root, in a $HOME and in the host's /tmp, victims to delete, and a
  symlink in the host's /tmp pointing at a secret;
- runs hostile samples through a ``SandboxPool`` of the mode: writes outside the sample's temp
  dir (/usr, the run dir, $HOME, a host dir), a remount of /usr read-write, reads of each
  secret copied to /tmp, deletes, listings of /home, /root and the run root, files under
  /proc/<this pid>/, symlinks pointing outside;
- checks each verdict (failed with ``runtime_error``, no secret in its detail) and, on the host,
  that every planted file is unchanged and nothing new appeared next to them or in /tmp.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script by another uid: the repo root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchforge.sandbox import CheckProgram, Limits, SandboxPool
from benchforge.sandbox.outer import view_spec

LIMITS = Limits(timeout_s=5.0, memory_mb=512, stack_mb=64, cpu_s=10, nofile=256, nproc=64,
                fsize_mb=1, max_output_bytes=100_000)


def snapshot(paths: list[Path]) -> dict[str, Any]:
    """Every file and dir under ``paths`` with its content and mtime."""
    seen: dict[str, Any] = {}
    for top in paths:
        for path in [top, *sorted(top.rglob("*"))] if top.is_dir() else [top]:
            if path.is_symlink():
                seen[str(path)] = ("link", os.readlink(path))
            elif path.is_file():
                seen[str(path)] = ("file", path.read_bytes(), path.stat().st_mtime_ns)
            elif path.is_dir():
                seen[str(path)] = ("dir", path.stat().st_mtime_ns)
            else:
                seen[str(path)] = None
    return seen


def visible_names() -> set[str]:
    """What a sample may see in /root or /home: parents of the bound interpreter/worker."""
    names = set()
    for op, *args in view_spec():
        if op in ("ro", "dir"):
            names.update(Path(args[-1]).parts[1:])
    return names


def battery(mode: str, scratch: Path) -> dict[str, Any]:
    """Run the battery in ``mode``; ``scratch`` is a dir of this uid for the planted files."""
    marker = f"bf-battery-{os.getpid()}-{secrets.token_hex(4)}"
    secret = f"TOPSECRET-{marker}"
    run_root, home = scratch / "runs", scratch / "home"
    cell = run_root / "default" / "oracle" / "humaneval"
    cell.mkdir(parents=True)
    home.mkdir()
    planted = {"run": run_root / "secret.txt", "home": home / ".secret-token",
               "tmp": Path(tempfile.gettempdir()) / f"{marker}-secret.txt"}
    for path in planted.values():
        path.write_text(secret)
        path.chmod(0o644)  # world-readable: only the view may hide it
    victims = [cell / "results.jsonl", home / ".bashrc"]
    for path in victims:
        path.write_text("keep me\n")
    host_link = Path(tempfile.gettempdir()) / f"{marker}-link"
    host_link.symlink_to(planted["run"])
    exfil = Path(tempfile.gettempdir()) / f"{marker}-exfil"
    watched = [scratch, planted["tmp"], host_link]
    before = snapshot(watched)
    tmp_before = {p.name for p in Path(tempfile.gettempdir()).iterdir() if marker in p.name}
    pid = os.getpid()

    def copy(src: str) -> str:
        return f"data = open({src!r}).read()\nopen({str(exfil)!r}, 'w').write(data)\n"

    cases = {
        "write outside the temp dir (a host dir)": f"open({str(scratch / 'evil')!r}, 'w')",
        "write outside the temp dir (/usr)": f"open('/usr/{marker}', 'w')",
        "write into $HOME": f"open({str(home / 'evil')!r}, 'w').write('x')",
        "write into the run dir": f"open({str(cell / 'evil.jsonl')!r}, 'w').write('x')",
        "remount /usr read-write, then write": textwrap.dedent(f"""\
            import ctypes
            ctypes.CDLL(None).mount(None, b'/usr', None, 32 | 4096, None)
            open('/usr/{marker}', 'w')"""),
        "read the run root's secret, copy it to /tmp": copy(str(planted["run"])),
        "read $HOME's secret, copy it to /tmp": copy(str(planted["home"])),
        "read the host /tmp's secret, copy it to /tmp": copy(str(planted["tmp"])),
        "delete a planted file (run dir)": f"import os\nos.remove({str(victims[0])!r})",
        "delete a planted file ($HOME)": f"import os\nos.remove({str(victims[1])!r})",
        "list /home, /root and the run root": textwrap.dedent(f"""\
            import json, os
            seen = {{p: sorted(os.listdir(p)) if os.path.isdir(p) else None
                    for p in ('/home', '/root', {str(run_root)!r})}}
            raise RuntimeError('LISTING' + json.dumps(seen))"""),
        "open /proc/<benchforge pid>/environ": f"open('/proc/{pid}/environ').read()",
        "open /proc/<benchforge pid>/root/<secret>":
            f"open('/proc/{pid}/root{planted['run']}').read()",
        "follow a symlink in the temp dir pointing outside":
            f"import os\nos.symlink({str(planted['run'])!r}, 'link')\n" + copy("link"),
        "follow a symlink planted in the host's /tmp": copy(str(host_link)),
    }
    results = []
    allowed = visible_names()
    with SandboxPool(mode, LIMITS, workers=2) as pool:
        guarantees = sorted(pool.guarantees)
        for name, code in cases.items():
            result = pool.run(CheckProgram(code))
            problems = []
            if result.passed or result.failure_mode != "runtime_error":
                problems.append(f"verdict {result.passed}/{result.failure_mode}")
            if secret in result.detail:
                problems.append("the secret reached the verdict")
            if name.startswith("list"):
                listing = json.loads(result.detail.split("LISTING", 1)[1].split("\n", 1)[0])
                if listing[str(run_root)] is not None or listing["/home"]:
                    problems.append(f"listed {listing}")
                if set(listing["/root"] or []) - allowed:
                    problems.append(f"/root shows {listing['/root']}")
            results.append({"case": name, "failure_mode": result.failure_mode,
                            "ok": not problems, "problems": problems,
                            "detail": result.detail.strip().splitlines()[-1:]})
    after = snapshot(watched)
    tmp_after = {p.name for p in Path(tempfile.gettempdir()).iterdir() if marker in p.name}
    host = []
    if after != before:
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        host.append(f"host files changed: {changed}")
    if tmp_after != tmp_before or exfil.exists():
        host.append(f"new in the host's /tmp: {sorted(tmp_after - tmp_before)}")
    for path in (planted["tmp"], host_link):
        path.unlink(missing_ok=True)
    return {"mode": mode, "uid": os.getuid(), "guarantees": guarantees, "results": results,
            "host_problems": host,
            "ok": not host and all(r["ok"] for r in results)}


if __name__ == "__main__":
    reports = []
    for mode in sys.argv[1:]:
        with tempfile.TemporaryDirectory() as scratch:
            reports.append(battery(mode, Path(scratch)))
    print(json.dumps(reports))
