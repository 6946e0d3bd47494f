"""Stand-in for ``vllm serve`` on a machine without a GPU.

It parses vLLM's real server flags (an unknown or misspelt flag is an error, as in vLLM),
serves the real OpenAI HTTP API through :mod:`benchforge.mock_server`, and starts a child
"engine core" process in its process group as vLLM does, so tests can see orphans.

Environment: FAKE_VLLM_ANSWERS (answers file, see mock_server), FAKE_VLLM_RECORD (append one
JSON line: argv, pid, engine pid), FAKE_VLLM_REQUESTS (append each request body),
FAKE_VLLM_DELAY (seconds per request), FAKE_VLLM_MODE = ok | crash | hang | die_after:N |
template_drift (renders chat prompts with one extra character, as another template would).
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
    parser = argparse.ArgumentParser(prog="vllm")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve")
    serve.add_argument("model")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--served-model-name", nargs="+")
    serve.add_argument("--max-model-len", type=int)
    serve.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    serve.add_argument("--max-num-seqs", type=int)
    serve.add_argument("--seed", type=int)
    serve.add_argument("--revision")
    serve.add_argument("--chat-template")
    serve.add_argument("--trust-remote-code", action="store_true")
    serve.add_argument("--download-dir")
    return parser.parse_args(argv)


def main() -> None:
    args = parse(sys.argv[1:])
    mode = os.environ.get("FAKE_VLLM_MODE", "ok")
    print(f"INFO api_server.py: vLLM API server version 0.0.0-fake, args: {vars(args)}",
          flush=True)
    if args.chat_template and not Path(args.chat_template).is_file():
        print(f"ValueError: The supplied chat template ({args.chat_template}) is not a file",
              flush=True)
        sys.exit(1)
    engine = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    record = os.environ.get("FAKE_VLLM_RECORD")
    if record:
        with open(record, "a") as fh:
            fh.write(json.dumps({"argv": sys.argv[1:], "pid": os.getpid(),
                                 "engine_pid": engine.pid,
                                 "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE")}) + "\n")
    if mode == "crash":
        for i in range(40):
            print(f"ERROR engine.py: init step {i} failed", flush=True)
        print("torch.OutOfMemoryError: CUDA out of memory (fake)", flush=True)
        sys.exit(1)
    if mode == "hang":
        print("INFO loading weights ... (fake: never finishes)", flush=True)
        while True:
            time.sleep(1)
    from benchforge.mock_server import MockState, load_answers, make_server

    answers = load_answers(Path(os.environ["FAKE_VLLM_ANSWERS"]))
    die_after = int(mode.split(":", 1)[1]) if mode.startswith("die_after:") else 0
    requests = os.environ.get("FAKE_VLLM_REQUESTS")
    delay = float(os.environ.get("FAKE_VLLM_DELAY", "0"))  # seconds per request
    state = MockState(answers, args.served_model_name[0], delay, 0, die_after=die_after,
                      log_requests=Path(requests) if requests else None)
    from benchforge.chat_template import special_tokens
    from benchforge.hub import snapshot_chat_template

    model_dir = Path(args.model)
    if args.chat_template:
        state.chat_template = Path(args.chat_template).read_text()
    elif model_dir.is_dir() and (found := snapshot_chat_template(model_dir)):
        state.chat_template = found[0]
    state.special_tokens = special_tokens(model_dir / "tokenizer_config.json"
                                          if model_dir.is_dir() else None)
    if mode == "template_drift":
        state.template_suffix = " "
    server = make_server(args.host, args.port, state)
    print(f"INFO Uvicorn running on http://{args.host}:{args.port} (fake)", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
