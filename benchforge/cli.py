"""``benchforge <command> [hydra overrides] [-m]``: a thin Hydra shell per command.

Which commands exist, what they run, their scope and SLURM shard shape come from one table,
:data:`benchforge.stages.COMMANDS`. Only the standard library and that table are imported at
module level, so ``benchforge --help`` is instant; Hydra and the stages load when a command
runs. User mistakes are printed as one line (no traceback); real bugs keep their traceback.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchforge.errors import RegressionDetected, VerifyFailed
from benchforge.stages import COMMANDS

USAGE = """usage: benchforge <command> [key=value ...] [-m]

Evaluate code LLMs on code benchmarks; every stage is resumable.

commands (benchforge <command> --help for its keys):
{commands}

examples:
  benchforge run                                   # oracle self-check on HumanEval (pass@1 = 1.000)
  benchforge run model=endpoint model.base_url=http://gpu01:8000/v1 model.served_name=my-model
  benchforge run -m model=oracle,endpoint ...      # sweep: one cell per combination
  benchforge score benchmark=humaneval score.samples=samples.jsonl run.dir=rescored/
  benchforge run -m model=a,b benchmark=humanevalplus,mbppplus compute=slurm compute.partition=gpu
  benchforge status run.name=default
  benchforge run --cfg job                         # print the composed config (Hydra flags work)
"""


def usage() -> str:
    """``benchforge --help``: every command of the registry with its help line."""
    width = max(map(len, COMMANDS))
    return USAGE.format(commands="\n".join(f"  {name:<{width}}  {c.help}"
                                           for name, c in COMMANDS.items()))


def command_usage(name: str) -> str:
    """``benchforge <name> --help``: the command's usage, what it does, where it runs and its
    most used keys (``--cfg job`` prints the whole composed config)."""
    command = COMMANDS[name]
    width = max([len(k) for k, _ in command.keys] or [0])
    usage = command.usage or "[key=value ...]" + (" [-m]" if command.shard else "")
    lines = [f"usage: benchforge {name} {usage}", "", command.help]
    if command.scope == "cell":
        lines.append("works on: one cell (run.dir; with -m, one per combination)")
    if command.shard:
        lines.append(f"SLURM shards ask for compute.{command.shard}")
    if command.keys:
        lines += ["", "most used keys:", *(f"  {k:<{width}}  {h}" for k, h in command.keys)]
    lines += ["", f"full config: benchforge {name} [key=value ...] --cfg job",
              "all commands: benchforge --help"]
    return "\n".join(lines)


def hydra_task(cfg: Any) -> Any:
    """The task function Hydra runs per job (module-level so launchers can pickle it)."""
    from benchforge import stages
    from benchforge.config import Launcher, check_choices

    check_choices(cfg)  # composition-time checks the schema's types cannot express
    runner = stages.runner(str(cfg.stage))
    if (cfg.compute.launcher == Launcher.slurm and COMMANDS[cfg.stage].scope == "cell"
            and "SLURM_JOB_ID" in os.environ):
        from benchforge.cell import cell_dir, run_root
        from benchforge.hub import offline
        from benchforge.shard import run_as_shard

        if offline(cfg.paths):  # compute nodes: no library of this process may try the hub either
            os.environ["HF_HUB_OFFLINE"] = "1"
        cdir = cell_dir(cfg)
        run_as_shard(cfg, cdir, run_root(cfg), lambda: runner(cfg))
        # submitit pickles the return value back to the submitting process: keep it small.
        return {"stage": str(cfg.stage), "cell": str(cdir.path)}
    try:
        result = runner(cfg)
    except OSError as exc:
        from benchforge.rundir import FULL_DISK, DiskFull

        if exc.errno not in FULL_DISK:
            raise
        raise DiskFull(Path(exc.filename or "."), 0) from None
    except Exception as exc:
        from benchforge.rundir import DiskFull

        if isinstance(exc, DiskFull):
            exc.args = (f"{exc} [{disk_key(cfg, exc.path)}]",)
        raise
    if cfg.stage == "verify" and result:
        raise VerifyFailed(result)
    return result


def disk_key(cfg: Any, path: Path) -> str:
    """The config key that puts ``path`` where it is (run.root, data.cache, ...)."""
    for key in ("run.root", "run.dir", "data.cache", "data.root", "paths.hf_cache"):
        try:
            base = Path(str(_select(cfg, key))).expanduser().resolve()
        except (KeyError, ValueError, TypeError):
            continue
        if path.resolve().is_relative_to(base):
            return f"set by {key}={base}"
    return "not under run.root or data.cache"


def _select(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


class _DropHydraJobBanner:
    """stderr proxy that drops Hydra's "Error executing job with overrides" line: benchforge
    prints its own one-line error for the same failure."""

    BANNER = "Error executing job with overrides:"

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        if text.startswith(self.BANNER):
            return len(text)
        return int(self._stream.write(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextmanager
def _hydra_process_state(argv: list[str]) -> Any:
    """Hydra reads sys.argv and, unless HYDRA_FULL_ERROR is set, prints errors itself."""
    saved_argv, saved_env, saved_stderr = sys.argv, os.environ.get("HYDRA_FULL_ERROR"), sys.stderr
    sys.argv = argv
    os.environ["HYDRA_FULL_ERROR"] = "1"
    sys.stderr = _DropHydraJobBanner(saved_stderr)  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stderr = saved_stderr
        sys.argv = saved_argv
        if saved_env is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved_env


def one_line(text: str) -> str:
    """``text`` with its line breaks (and the blanks around them) as ``; ``."""
    return re.sub(r"\s*\n\s*", "; ", str(text).strip())


def describe_config_error(exc: BaseException) -> str | None:
    """One line for a config mistake (bad type, unknown option, missing ``???``), else None."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    cause = exc.__cause__ if isinstance(exc.__cause__, OmegaConfBaseException) else exc
    missing = re.search(r"Missing mandatory value: ([\w.]+)", str(cause))
    if missing:
        key = missing.group(1)
        return f"config error: '{key}' is required (???); set it, e.g. {key}=..."
    if isinstance(cause, OmegaConfBaseException):
        key = getattr(cause, "full_key", None)
        msg = getattr(cause, "msg", None) or str(cause)
        msg = one_line(msg.split("\n    full_key:")[0])
        context = f" ({one_line(str(exc))})" if cause is not exc else ""
        if key:
            return f"config error at '{key}': {msg}{context}"
        return f"config error: {msg}{context}"
    if isinstance(exc, HydraException):
        text = str(exc).split("Config search path:")[0]
        if "hydra/launcher/submitit_slurm" in text:
            return ('compute=slurm needs hydra-submitit-launcher: pip install '
                    '"benchforge[slurm]"')
        return f"config error: {one_line(text).rstrip('; ')}"
    return None


def run_command(name: str, overrides: Sequence[str], launch_checked: bool = False) -> int:
    """Run one command of the registry (a pipeline stage or any other command) through Hydra;
    the command's name goes into the config's ``stage`` key. ``launch_checked``: the caller
    already composed the sweep and found it local, so the SLURM pre-launch checks are
    skipped. Returns the exit status."""
    import hydra

    from benchforge.config import CONFIG_MODULE, CONFIG_NAME, register_configs
    from benchforge.errors import BenchforgeError

    register_configs()
    command = COMMANDS[name]
    extra = [f"stage={name}"]
    if command.shard:
        extra.append(f"compute.shard={command.shard}")
    if is_multirun(overrides) and not launch_checked and command.shard:
        from benchforge.launch import plan_launch

        try:
            extra += plan_launch(name, [*overrides, f"compute.shard={command.shard}"])
        except BenchforgeError as exc:
            print(f"benchforge {name}: error: {exc}", file=sys.stderr)
            return 2
    if command.read_only:  # nothing written before (or while) reading: works on a full disk
        extra += ["hydra/job_logging=stdout", "hydra.output_subdir=null", "hydra.run.dir=."]
    elif command.scope == "run":
        extra.append("hydra.run.dir=${run.root}/${run.name}/logs/" + name
                     + "-${now:%Y%m%dT%H%M%S}")
    entry = hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}",
                       config_name=CONFIG_NAME)(hydra_task)
    watch = _pending_watch(name, overrides, extra)
    with _hydra_process_state([f"benchforge {name}", *overrides, *extra]), watch:
        try:
            entry()
        except KeyboardInterrupt:
            if watch.stopped:
                print(f"benchforge {name}: error: {watch.stopped}", file=sys.stderr)
                return 2
            raise
        except VerifyFailed as exc:
            for problem in exc.problems:
                print(f"  - {problem}", file=sys.stderr)
            print(f"benchforge verify: {exc}", file=sys.stderr)
            return 1
        except BenchforgeError as exc:
            if isinstance(exc, RegressionDetected):
                print(f"benchforge {name}: regression: {exc}", file=sys.stderr)
                return 3
            print(f"benchforge {name}: error: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:  # Hydra's own logs, before any command code runs
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                message = describe_config_error(exc)  # Hydra's MissingConfig is an OSError
                if message is None:
                    raise
                print(f"benchforge {name}: {message}", file=sys.stderr)
                return 2
            print(f"benchforge {name}: error: {exc.filename or 'writing a log'}: no space left "
                  "on device; free space and rerun (nothing written before is lost)",
                  file=sys.stderr)
            return 2
        except Exception as exc:
            message = describe_config_error(exc)
            if message is None:
                raise
            print(f"benchforge {name}: {message}", file=sys.stderr)
            return 2
    return 0


def _pending_watch(stage: str, overrides: Sequence[str], extra: list[str]) -> Any:
    """A PendingWatch for a SLURM sweep (plan_launch added its array width), else a no-op."""
    from contextlib import nullcontext

    if not any(x.startswith("hydra.launcher.array_parallelism=") for x in extra):
        noop: Any = nullcontext()
        noop.stopped = None
        return noop
    from benchforge.cell import run_root
    from benchforge.launch import PendingWatch, first_job_config

    cfg = first_job_config(overrides, stage)
    interval = float(os.environ.get("BENCHFORGE_PENDING_LOG_S", "120"))
    return PendingWatch(f"bf-{stage}", run_root(cfg) / "logs" / "pending.json", interval)


def positional_overrides(stage: str, args: Sequence[str]) -> list[str]:
    """``compare A B``, ``inspect CELL --failed --diff OTHER`` and ``--exit-on-regression`` as
    the Hydra overrides they stand for; everything else passes through."""
    out: list[str] = []
    positional: list[str] = []
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg == "--exit-on-regression":
            out.append("aggregate.exit_on_regression=true")
        elif stage == "inspect" and arg == "--failed":
            out.append("inspect.failed=true")
        elif stage == "inspect" and arg == "--diff" and rest:
            out.append(f"inspect.diff={rest.pop(0)}")
        elif stage in ("compare", "inspect") and "=" not in arg and not arg.startswith("-"):
            positional.append(arg)
        else:
            out.append(arg)
    names = {"compare": ["compare.a", "compare.b"], "inspect": ["inspect.cell"]}.get(stage, [])
    return [*(f"{k}={v}" for k, v in zip(names, positional, strict=False)), *out]


def is_multirun(overrides: Sequence[str]) -> bool:
    """Whether the overrides ask Hydra for a sweep (``-m``/``--multirun``)."""
    return "-m" in overrides or "--multirun" in overrides


def run_sweep(overrides: Sequence[str]) -> int:
    """``benchforge run -m``. Locally: every stage per cell, in one sweep. On SLURM: a job
    array of GPU generate shards, then one of CPU-only score (+ aggregate) shards, so no GPU
    idles while samples are scored."""
    from benchforge.config import Launcher
    from benchforge.launch import first_job_config

    cfg = first_job_config(overrides, "run")
    if cfg is not None and cfg.smoke.gate:
        code = smoke_gate(overrides)
        if code:
            return code
    if cfg is None or cfg.compute.launcher != Launcher.slurm:
        return run_command("run", overrides, launch_checked=cfg is not None)
    phases: list[tuple[str, list[str]]] = [("generate", []), ("score", ["score.aggregate=true"])]
    if cfg.score.samples or cfg.score.reference:  # nothing to generate: CPU shards only
        phases = phases[1:]
    for stage, extra in phases:
        print(f"benchforge run: {stage} sweep", file=sys.stderr)
        code = subprocess.call([sys.executable, "-m", "benchforge", stage, *overrides, *extra])
        if code:
            if code != 2:  # 2: a user mistake, already explained in one line
                print(f"benchforge run: the {stage} sweep failed (exit {code}); rerun the "
                      "same command to resume", file=sys.stderr)
            return code
    return 0


def smoke_gate(overrides: Sequence[str]) -> int:
    """``smoke.gate=true``: smoke every model of the sweep (on its first benchmark) before any
    shard starts; a failed smoke stops the run."""
    from benchforge.launch import collapse_sweep

    print("benchforge run: smoke gate", file=sys.stderr)
    code = subprocess.call([sys.executable, "-m", "benchforge", "smoke",
                            *collapse_sweep(overrides, "benchmark")])
    if code:
        print(f"benchforge run: smoke gate failed (exit {code}); no shard was started",
              file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """``benchforge`` itself: returns the exit status (0 ok, 1 verify problems, 2 a user
    mistake printed as one line, 3 a regression, 130/143 interrupted/terminated, 141 when the
    reader of stdout went away, as in ``benchforge status | head``).
    """
    try:
        return _main(argv)
    except BrokenPipeError:
        # the reader closed the pipe: no traceback, and none again when Python flushes stdout
        # at exit (the recipe of Python's signal module documentation)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


def _main(argv: Sequence[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if args[0] == "--version":
        from importlib.metadata import version

        print(f"benchforge {version('benchforge')}")
        return 0
    stage, overrides = args[0], positional_overrides(args[0], args[1:])
    if stage not in COMMANDS:
        print(f"benchforge: unknown stage '{stage}'; stages: {', '.join(COMMANDS)} "
              "(see benchforge --help)", file=sys.stderr)
        return 2
    if "--help" in args[1:] or "-h" in args[1:]:
        print(command_usage(stage))
        return 0
    from benchforge.errors import Terminated

    previous = install_interrupt_handlers()
    try:
        if stage == "run" and is_multirun(overrides):
            return run_sweep(overrides)
        return run_command(stage, overrides)
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        print(f"benchforge {stage}: {'terminated (SIGTERM)' if terminated else 'interrupted'}; "
              "rerun the same command to resume", file=sys.stderr)
        return 143 if terminated else 130
    finally:
        restore_handlers(previous)


def install_interrupt_handlers() -> dict[int, Any]:
    """SIGTERM and SIGINT kill every sandbox worker at once (the sample in flight included),
    then unwind as KeyboardInterrupt (Terminated for SIGTERM): rows already written stay, the
    rerun resumes. A second signal during that cleanup is ignored."""
    import signal

    def on_signal(signum: int, _frame: object) -> None:
        from benchforge.errors import Terminated
        from benchforge.sandbox.pool import abort_all

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        abort_all()
        if signum == signal.SIGTERM:
            raise Terminated()
        raise KeyboardInterrupt()

    previous: dict[int, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, on_signal)
        except ValueError:  # not the main thread (embedded use): leave signals alone
            break
    return previous


def restore_handlers(previous: dict[int, Any]) -> None:
    """Put back the signal handlers install_interrupt_handlers replaced."""
    import signal

    for sig, handler in previous.items():
        signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
