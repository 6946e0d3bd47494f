"""Stand-in for Apptainer. ``exec [options] IMAGE COMMAND...`` checks the image is a file and
runs COMMAND from PATH (the fake ``vllm`` there), replacing itself as apptainer does;
``pull [--force] SIF SOURCE`` and ``build [--force] SIF DEFFILE`` write a small deterministic
SIF (FAKE_APPTAINER_FAIL=1 makes them fail like a registry error)."""

from __future__ import annotations

import os
import sys

VALUE_OPTIONS = {"--bind", "-B", "--env", "--pwd", "--home", "--overlay"}


def main() -> None:
    args = sys.argv[1:]
    if args and args[0] in ("pull", "build"):
        verb, rest = args[0], [a for a in args[1:] if a != "--force"]
        if os.environ.get("FAKE_APPTAINER_FAIL") == "1":
            print(f"FATAL:   While making image from oci registry: {rest[-1]}: "
                  "manifest unknown", file=sys.stderr)
            sys.exit(255)
        sif, source = rest
        if verb == "build":
            with open(source) as definition:
                source = definition.read()
        with open(sif, "wb") as fh:
            fh.write(b"SIF-fake\n" + source.encode())
        return
    if not args or args[0] != "exec":
        sys.exit(f"fake apptainer: only `exec` is supported, got {args[:1]}")
    args = args[1:]
    while args and args[0].startswith("-"):
        option = args.pop(0)
        if option in VALUE_OPTIONS:
            args.pop(0)
    if len(args) < 2:
        sys.exit("fake apptainer: usage: exec [options] IMAGE COMMAND...")
    image, command = args[0], args[1:]
    if not os.path.isfile(image):
        sys.exit(f"FATAL: could not open image {image}: no such file")
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
