"""Stand-in for ``python -m llama_cpp.server`` (llama-cpp-python) without its C++ build.

It parses the server's real flags (an unknown flag is an error, as with llama-cpp-python's
argparse), reads the GGUF's embedded chat template with the ``gguf`` library, and serves the
OpenAI API through :mod:`benchforge.mock_server` in the ``llama-cpp-python`` flavour
(``/extras/tokenize``, no ``/health``), after starting a child process in its group.

Environment: FAKE_LLAMA_ANSWERS (answers file), FAKE_LLAMA_RECORD (append argv, pid, child
pid), FAKE_LLAMA_MODE = ok | crash | hang, FAKE_LLAMA_FLAVOUR (default llama-cpp-python).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m llama_cpp.server")
    parser.add_argument("--model", required=True)
    parser.add_argument("--model_alias")
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--n_ctx", type=int, default=2048)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--n_threads", type=int)
    parser.add_argument("--n_threads_batch", type=int)
    parser.add_argument("--n_gpu_layers", type=int, default=0)
    parser.add_argument("--chat_format")
    return parser.parse_args(argv)


def main() -> None:
    args = parse(sys.argv[1:])
    mode = os.environ.get("FAKE_LLAMA_MODE", "ok")
    print(f"llama_model_loader: loaded meta data from {args.model} (fake)", flush=True)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    record = os.environ.get("FAKE_LLAMA_RECORD")
    if record:
        with open(record, "a") as fh:
            fh.write(json.dumps({"argv": sys.argv[1:], "pid": os.getpid(),
                                 "child_pid": child.pid}) + "\n")
    if mode == "crash":
        print("llama_model_load: error loading model: tensor data is not within file bounds",
              flush=True)
        sys.exit(1)
    if mode == "hang":
        while True:
            time.sleep(1)
    from benchforge.gguf_model import gguf_info
    from benchforge.mock_server import MockState, load_answers, make_server

    info = gguf_info(Path(args.model))
    state = MockState(load_answers(Path(os.environ["FAKE_LLAMA_ANSWERS"])),
                      args.model_alias or args.model, 0.0, 0)
    state.flavour = os.environ.get("FAKE_LLAMA_FLAVOUR", "llama-cpp-python")
    if args.chat_format == "chat_template.default":
        state.chat_template = info.chat_template
        state.special_tokens = info.special_tokens()
    server = make_server(args.host, args.port, state)
    print(f"INFO:     Uvicorn running on http://{args.host}:{args.port} (fake)", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
