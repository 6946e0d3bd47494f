"""Outer layers: how a worker process is wrapped (bwrap, apptainer, user namespaces, nothing).

Each mode turns the worker's argv into the argv of its isolating launcher and says what it
guarantees. ``detect_mode`` picks the strongest one that works on this host for ``auto``.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchforge.errors import BenchforgeError

PACKAGE_DIR = Path(__file__).resolve().parent
WORKER = PACKAGE_DIR / "_worker.py"
CONTAINER_WORKER_DIR = "/opt/benchforge-sandbox"

# Imported once per worker and inherited by every forked sample: numpy (comparisons need it,
# samples import it) and what the official evaluators' reliability guards import.
PRELOAD = ("numpy", "subprocess", "shutil", "faulthandler", "platform")



@dataclass(frozen=True)
class OuterLayer:
    """How a worker is started inside one outer layer: the argv before the interpreter, the worker
    script and Python as seen inside, the worker's config and environment."""

    mode: str
    argv_prefix: list[str]
    worker_path: str  # where the worker script is, as seen inside the layer
    python: str
    worker_config: dict[str, object] = field(default_factory=dict)
    image: str | None = None
    env: dict[str, str] | None = None  # the launcher's whole environment (None: inherited)


def is_root() -> bool:
    """Whether benchforge runs as root (samples then run as an unprivileged uid)."""
    return os.geteuid() == 0


def _readable_by_others(paths: list[Path]) -> bool:
    """Can an unprivileged uid reach these paths (every parent o+x, the path o+r)?"""
    for path in paths:
        for part in [path, *path.parents]:
            try:
                mode = part.stat().st_mode
            except OSError:
                return False
            need = stat.S_IXOTH if stat.S_ISDIR(mode) else stat.S_IROTH
            if not mode & need:
                return False
    return True


def python_paths() -> list[Path]:
    """The interpreter's prefix, base prefix and bin dir (bound read-only into the sandbox)."""
    paths = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).resolve().parent}
    return sorted(p.resolve() for p in paths)


def view_spec(extra: tuple[str, ...] = ()) -> list[list[str]]:
    """The filesystem a sample sees, shared by ``bwrap`` and ``userns``: ``[op, *args]`` steps.

    ``["symlink", target, path]``, ``["ro", src, dst]``, ``["ro-try", src, dst]`` (skipped if
    ``src`` is missing), ``["tmpfs", path]`` (private, mode 1777) and ``["dir", path]`` (an empty
    0755 directory). Only /usr, the libraries, a few /etc files, the interpreter, the worker
    and ``extra`` (read-only benchmark fixtures) are visible; /proc and /dev are added by the
    layer itself.
    """
    steps: list[list[str]] = []
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        path = Path(top)
        if path.is_symlink():
            steps.append(["symlink", os.readlink(top), top])
        elif path.is_dir():
            steps.append(["ro", top, top])
    # /etc made first as a world-traversable 0755 directory: otherwise the layer creates it
    # as the parent of the binds below with a mode a sample uid cannot traverse, and every
    # /etc/alternatives link (cc, javac, java) and toolchain config under /etc is unreachable.
    steps += [["ro", "/usr", "/usr"], ["tmpfs", "/tmp"], ["dir", "/etc"]]
    for etc in ("/etc/ld.so.cache", "/etc/localtime", "/etc/alternatives"):
        steps.append(["ro-try", etc, etc])
    # The interpreter and the worker, read-only, with world-readable parents (an unprivileged
    # sample uid must be able to import from them). They come after the /tmp tmpfs, which
    # would otherwise hide a venv that lives in /tmp.
    made: set[str] = {"/", "/usr", "/tmp", "/etc"}
    bound: list[Path] = []
    for path in sorted({*python_paths(), PACKAGE_DIR, *(Path(p).resolve() for p in extra)}):
        if str(path).startswith("/usr/") or any(b in path.parents for b in bound):
            continue
        bound.append(path)
        for parent in reversed(path.parents):
            if str(parent) not in made:
                made.add(str(parent))
                steps.append(["dir", str(parent)])
        steps.append(["ro", str(path), str(path)])
    return steps


def _bwrap_binds(extra: tuple[str, ...] = ()) -> list[str]:
    args: list[str] = []
    for op, *rest in view_spec(extra):
        if op == "symlink":
            args += ["--symlink", *rest]
        elif op == "ro":
            args += ["--ro-bind", *rest]
        elif op == "ro-try":
            args += ["--ro-bind-try", *rest]
        elif op == "tmpfs":
            args += ["--perms", "1777", "--tmpfs", *rest]
        elif op == "dir":
            args += ["--perms", "0755", "--dir", *rest]
    return args


def bwrap_argv(extra_ro: tuple[str, ...] = ()) -> list[str]:
    """The bubblewrap argv: new namespaces, a read-only view of the system and the interpreter,
    ``/tmp`` as a tmpfs, plus ``extra_ro`` dirs read-only."""
    namespaces = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
                  "--unshare-cgroup-try"]
    if not is_root():
        namespaces.append("--unshare-user")  # root stays root so it can drop to a sample uid
    return ["bwrap", *namespaces, "--die-with-parent", "--new-session", *_bwrap_binds(extra_ro),
            "--proc", "/proc", "--dev", "/dev", "--chdir", "/tmp", "--clearenv",
            "--setenv", "PATH", "/usr/bin:/bin"]


def apptainer_argv(image: str, setuid: bool, extra_ro: tuple[str, ...] = ()) -> list[str]:
    """The apptainer argv for ``image``: contained, no home, clean env, no network, the worker dir
    bound read-only (``setuid``: no user namespace)."""
    argv = ["apptainer", "exec", "--containall", "--no-home", "--cleanenv", "--net",
            "--network", "none",
            "--bind", f"{PACKAGE_DIR}:{CONTAINER_WORKER_DIR}:ro"]
    for path in extra_ro:
        argv += ["--bind", f"{path}:{path}:ro"]
    if not setuid:
        argv.append("--userns")
    return [*argv, image]


def userns_argv() -> list[str]:
    """``unshare`` into fresh user, mount, pid, net, ipc and uts namespaces; the worker then
    builds its private filesystem view there (``view_spec``, see _worker.build_view)."""
    return [shutil.which("unshare") or "unshare", "--user", "--map-root-user", "--mount",
            "--net", "--pid", "--ipc", "--uts", "--fork", "--mount-proc", "--kill-child"]


def _pids_cgroup(tag: str, max_pids: int) -> str | None:
    """A fresh pids cgroup (v1 or v2) for one worker's samples, if this host lets us make one."""
    for root in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
        if not (root / "cgroup.procs").exists():
            continue
        path = root / f"benchforge-{tag}"
        try:
            path.mkdir(exist_ok=True)
            (path / "pids.max").write_text(f"{max_pids}\n")
        except OSError:
            shutil.rmtree(path, ignore_errors=True)
            continue
        return str(path)
    return None


def sample_uid(slot: int) -> int:
    """A uid no one else uses, distinct per worker of this process (NPROC counts per uid)."""
    return 1_000_000_000 + (os.getpid() << 8) + slot


def _pid_namespace() -> int | None:
    """This process's pid namespace (an inode): the worker checks that it runs in another."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


def _base_config() -> dict[str, object]:
    return {"tmp_root": "/tmp", "preload": list(PRELOAD), "host_pidns": _pid_namespace()}


def _bwrap_layer(slot: int, image: str | None, nproc: int,
                 extra_ro: tuple[str, ...]) -> OuterLayer:
    config = _base_config()
    if is_root():
        config.update(uid=sample_uid(slot), gid=sample_uid(slot))
    config["pidns"] = True
    return OuterLayer("bwrap", bwrap_argv(extra_ro), str(WORKER), sys.executable, config)


def _apptainer_layer(setuid: bool) -> Callable[..., OuterLayer]:
    mode = "apptainer-setuid" if setuid else "apptainer"

    def build(slot: int, image: str | None, nproc: int,
              extra_ro: tuple[str, ...]) -> OuterLayer:
        if not image:
            raise BenchforgeError(
                f"sandbox={mode} needs sandbox.image: a scorer SIF built from "
                "containers/scorer.def (see README, 'Security model')")
        if not Path(image).is_file():
            raise BenchforgeError(f"sandbox.image={image}: file not found")
        config = _base_config()
        config["pidns"] = True
        return OuterLayer(mode, apptainer_argv(image, setuid, extra_ro),
                          f"{CONTAINER_WORKER_DIR}/_worker.py", "python3", config, image)

    return build


def _userns_layer(slot: int, image: str | None, nproc: int,
                  extra_ro: tuple[str, ...]) -> OuterLayer:
    # The same view as bwrap, built by the worker as root of its user namespace; each sample
    # then drops every capability, so (also when benchforge runs as root) it sees only
    # read-only binds, a private /tmp and its own /proc, and cannot remount them.
    config = _base_config()
    config.update(pidns=True, fs_view=view_spec(extra_ro), drop_caps=True)
    if is_root():  # root's RLIMIT_NPROC does not bind, even in a user namespace
        config["cgroup"] = _pids_cgroup(f"{os.getpid()}-{slot}", nproc)
    return OuterLayer("userns", userns_argv(), str(WORKER), sys.executable, config,
                      env={"PATH": "/usr/bin:/bin"})


def _rlimit_only_layer(slot: int, image: str | None, nproc: int,
                       extra_ro: tuple[str, ...]) -> OuterLayer:
    config = _base_config()
    config["tmp_root"] = tempfile.gettempdir()
    if is_root():
        config["unshare_net"] = True
        if _readable_by_others([*python_paths(), WORKER]):
            config.update(uid=sample_uid(slot), gid=sample_uid(slot))
        else:  # the interpreter is not readable by another uid: bound NPROC by cgroup
            config["cgroup"] = _pids_cgroup(f"{os.getpid()}-{slot}", nproc)
    return OuterLayer("rlimit-only", [], str(WORKER), sys.executable, config)


def _works(argv: list[str], **kwargs: object) -> str | None:
    """None if ``argv`` runs and exits 0 here, else why not (the last line it printed)."""
    try:
        done = subprocess.run(argv, capture_output=True, timeout=20, **kwargs)  # type: ignore[call-overload]
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    if done.returncode == 0:
        return None
    lines = done.stderr.decode(errors="replace").strip().splitlines()
    return lines[-1][:200] if lines else f"exit code {done.returncode}"


def _bwrap_problem(image: str | None) -> str | None:
    if shutil.which("bwrap") is None:
        return "bwrap not found on PATH"
    return _works([*bwrap_argv(), "true"])


def _apptainer_problem(setuid: bool) -> Callable[[str | None], str | None]:
    def problem(image: str | None) -> str | None:
        if shutil.which("apptainer") is None:
            return "apptainer not found on PATH"
        if not image or not Path(image).is_file():
            return "sandbox.image (a scorer SIF) not set" if not image else f"{image} not found"
        return _works([*apptainer_argv(image, setuid), "true"])

    return problem


def _userns_problem(image: str | None) -> str | None:
    if shutil.which("unshare") is None:
        return "unshare not found on PATH"
    probe = {"fs_view": view_spec(), "probe": True}
    return _works([*userns_argv(), sys.executable, "-I", "-B", str(WORKER), json.dumps(probe)],
                  env={"PATH": "/usr/bin:/bin"})


@dataclass(frozen=True)
class SandboxMode:
    """One sandbox mode (``sandbox.name``): everything benchforge knows about it, in one record.

    Adding a mode means one record in :data:`MODE_TABLE`, its ``conf/sandbox/<name>.yaml``, and
    nothing else: ``auto``, ``resolve_mode``, the pool, provenance's weakest-mode order and the
    shipped conformance suite (``benchforge sandbox-check sandbox=<name>``) all read the table.

    Attributes:
        name: the ``sandbox.name`` value.
        isolates_files: whether the layer hides the host filesystem (only read-only binds and a
            private tmp visible); ``userns`` claims it once its worker verified the view.
        auto_rank: the order in which ``auto`` tries it (lower first); None: never by ``auto``.
        hint: what to do when it does not work on a host (the end of the one-line error).
        build: ``(slot, image, nproc, extra_ro) -> OuterLayer``; raises BenchforgeError when a
            setting it needs is missing (``sandbox.image``).
        problem: ``(image) -> str | None``: why the layer does not start here (it is started,
            not just looked up), or None when it works.
    """

    name: str
    isolates_files: bool
    auto_rank: int | None
    hint: str
    build: Callable[[int, str | None, int, tuple[str, ...]], OuterLayer]
    problem: Callable[[str | None], str | None]


# Strongest first: this order is also what "weakest mode used" means in provenance.
MODE_TABLE: dict[str, SandboxMode] = {mode.name: mode for mode in (
    SandboxMode("bwrap", True, 0,
                "install bubblewrap (apt install bubblewrap) and allow user namespaces",
                _bwrap_layer, _bwrap_problem),
    SandboxMode("apptainer", True, 1,
                "install apptainer and set sandbox.image to the scorer SIF",
                _apptainer_layer(False), _apptainer_problem(False)),
    SandboxMode("apptainer-setuid", True, 2,
                "install apptainer (setuid) and set sandbox.image",
                _apptainer_layer(True), _apptainer_problem(True)),
    SandboxMode("userns", True, 3,
                "this host does not allow unprivileged user namespaces",
                _userns_layer, _userns_problem),
    SandboxMode("rlimit-only", False, None,
                "it needs nothing; it is NOT a sandbox (samples can read and write your files)",
                _rlimit_only_layer, lambda image: None),
)}
MODES: tuple[str, ...] = tuple(MODE_TABLE)
# Modes whose outer layer hides the host filesystem. Network isolation, process sweeping and
# NPROC are verified by the worker at start-up.
FILESYSTEM_ISOLATING: frozenset[str] = frozenset(
    name for name, mode in MODE_TABLE.items() if mode.isolates_files)


def sandbox_mode(name: str) -> SandboxMode:
    """The record of sandbox mode ``name``.

    Raises:
        BenchforgeError: an unknown name (one line listing the modes).
    """
    try:
        return MODE_TABLE[name]
    except KeyError:
        raise BenchforgeError(
            f"sandbox={name}: unknown mode; available: auto, {', '.join(MODES)}") from None


def make_outer(mode: str, slot: int, image: str | None = None, nproc: int = 64,
               extra_ro: tuple[str, ...] = ()) -> OuterLayer:
    """The outer layer of worker ``slot`` in sandbox mode ``mode`` (one of :data:`MODES`).

    Args:
        mode: a ``sandbox.name`` other than ``auto``.
        slot: the worker's index (0..workers-1); picks its sample uid and cgroup.
        image: the scorer SIF (apptainer modes).
        nproc: the processes one sample may have (a pids cgroup where RLIMIT_NPROC cannot bind).
        extra_ro: dirs samples' checks must read (benchmark fixtures), bound read-only where the
            layer hides the filesystem.

    Raises:
        BenchforgeError: an unknown mode, or a setting the mode needs is missing.
    """
    return sandbox_mode(mode).build(slot, image, nproc, extra_ro)


@functools.cache
def mode_problem(mode: str, image: str | None = None) -> str | None:
    """Why the outer layer of sandbox mode ``mode`` does not start on this host (not just: is
    the binary there), or None when it works. ``userns`` is probed with its whole filesystem
    view."""
    if mode not in MODE_TABLE:
        return f"unknown mode {mode}"
    return MODE_TABLE[mode].problem(image)


def mode_available(mode: str, image: str | None = None) -> bool:
    """Does this outer layer actually start on this host?"""
    return mode_problem(mode, image) is None


def detect_mode(image: str | None = None) -> str:
    """The strongest mode that works here and hides the host filesystem, in ``auto_rank`` order
    (bwrap, apptainer, apptainer-setuid, userns). None does: a one-line error naming each mode
    tried and why it failed (``auto`` never falls back to ``rlimit-only`` silently)."""
    tried = []
    ranked = sorted((m for m in MODE_TABLE.values() if m.auto_rank is not None),
                    key=lambda m: m.auto_rank or 0)
    for mode in ranked:
        problem = mode_problem(mode.name, image)
        if problem is None and mode.isolates_files:
            return mode.name
        tried.append(f"{mode.name}: {problem or 'no filesystem isolation'}")
    raise BenchforgeError(
        "sandbox=auto: no mode that isolates the filesystem works on this host ("
        + "; ".join(tried) + "); install bubblewrap (apt install bubblewrap) or apptainer, "
        "allow unprivileged user namespaces, or pass sandbox=rlimit-only explicitly "
        "(NOT a sandbox: samples can read and write your files)")
