"""A fake ``nvidia-smi`` at the NVML/driver boundary: answers the one query benchforge.gpumon
makes, with a power trace that ramps linearly in time so tests can integrate it exactly.

P(t) = base + 40 t W with base 100 W on GPU 0 and 50 W on GPU 1, t = seconds since
$FAKE_SMI_T0; memory grows 1000 MiB per second; GPU 1 reports utilisation as [N/A]. Every
call's arguments are appended to $FAKE_SMI_LOG. A malformed $FAKE_SMI_T0 makes it fail, like a
lost driver.
"""

import os
import sys
import time

args = sys.argv[1:]
with open(os.environ["FAKE_SMI_LOG"], "a") as log:
    log.write(" ".join(args) + "\n")
if args[:2] != ["--query-gpu=index,memory.used,power.draw,utilization.gpu",
                "--format=csv,noheader,nounits"]:
    sys.exit(f"fake nvidia-smi: unexpected arguments {args}")
ids = ["0", "1"]
for arg in args[2:]:
    if arg.startswith("--id="):
        ids = arg[5:].split(",")
t = time.time() - float(os.environ["FAKE_SMI_T0"])
for i in ids:
    base = 100.0 if i == "0" else 50.0
    util = "[N/A]" if i == "1" else "90"
    print(f"{i}, {1000 * t:.0f}, {base + 40 * t:.4f}, {util}")
