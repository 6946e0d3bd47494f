"""A small OpenAI-compatible HTTP server: the stand-in for ``vllm serve`` without a GPU.

It answers ``/v1/chat/completions`` and ``/v1/completions`` from an answers file that maps the
sha256 of a prompt (see :mod:`benchforge.prompts`) to a completion, and serves ``/health`` and
``/v1/models`` like vLLM. ``--flavour`` picks the tokenize API it speaks: ``vllm``
(``/tokenize``), ``llama-cpp-python`` (``/extras/tokenize``; chat ``usage.prompt_tokens``
counts the rendered prompt), ``llama-server`` (``/tokenize`` with ``content``,
``/apply-template``, ``/props``, ``timings`` in replies) or ``none``. ``model=oracle`` runs
it with the benchmark's canonical solutions; tests run it with chosen wrong answers, delays
or transient 503s.

    python -m benchforge.mock_server --port 8000 --answers answers.jsonl --served-model-name m
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from benchforge.prompts import messages_sha256, text_sha256


class MockState:
    """What the server answers and how it misbehaves, shared by its request threads.

    Args:
        answers: prompt sha256 -> completion text, or a reply dict (``completion`` plus any of
            :data:`REPLY_FIELDS`), as :func:`load_answers` reads them.
        served_name: the model name ``/v1/models`` lists and requests must send.
        delay_s: seconds slept per completion request (a real model's latency).
        fail_first: the first N completion requests get a 503 (transient failures).
        die_after: exit the process after this many answers (0: never), as a crashing server.
        log_requests: append each completion request (path and body) to this file.
    """
    def __init__(self, answers: dict[str, Any], served_name: str, delay_s: float,
                 fail_first: int, die_after: int = 0, log_requests: Path | None = None) -> None:
        self.answers = answers
        self.log_requests = log_requests  # append every completion request body (tests)
        # /tokenize: the chat template (None: the model has none) and its special tokens; the
        # "tokenizer" maps characters to code points, so equal tokens mean equal text.
        self.chat_template: str | None = None
        self.special_tokens: dict[str, Any] = {}
        self.template_suffix = ""  # a server whose rendering drifts (tests)
        self.flavour = "vllm"  # which tokenize API it speaks (module docstring)
        self.die_after = die_after  # exit the process after this many answers (0: never)
        self.answered = 0
        self.served_name = served_name
        self.delay_s = delay_s
        self._fail_left = fail_first
        self._lock = threading.Lock()
        self.requests = 0

    def take_failure(self) -> bool:
        """Count a completion request; True while ``fail_first`` 503s remain
        (thread-safe).
        """
        with self._lock:
            self.requests += 1
            if self._fail_left > 0:
                self._fail_left -= 1
                return True
            return False


# Optional fields of an answers row that make the reply misbehave as real servers do.
REPLY_FIELDS = ("finish_reason", "reasoning_content", "reasoning_tokens", "ignore_stop")


def write_answers(path: Path, rows: list[dict[str, str]]) -> None:
    """Write an answers file: one JSON row per line, ``{"prompt_sha256", "completion", ...}``
    (the optional misbehaviour fields below may be set too); read back by load_answers."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def load_answers(path: Path) -> dict[str, Any]:
    """``prompt_sha256 -> completion`` from an answers file. A row may also set
    ``finish_reason`` (e.g. ``"length"``: a reply cut by max_tokens), ``completion: null``
    (content null), ``reasoning_content``/``reasoning_tokens`` (a reasoning parser's split)
    and ``ignore_stop`` (the server does not apply ``stop``); such rows map to a dict."""
    answers: dict[str, Any] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                extra = {k: row[k] for k in REPLY_FIELDS if k in row}
                answers[row["prompt_sha256"]] = ({"completion": row["completion"], **extra}
                                                 if extra else row["completion"])
    return answers


def apply_stop(text: str, stop: list[str] | str | None) -> tuple[str, str]:
    """Cut at the earliest stop string, as vLLM does (the stop string is not returned)."""
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    cuts = [text.find(s) for s in stops if s and s in text]
    if cuts:
        return text[: min(cuts)], "stop"
    return text, "stop"


def count_tokens(text: str) -> int:
    """The mock's token count: whitespace-separated words (enough for usage figures
    and cost tests; not a real tokenizer).
    """
    return len(text.split())


class Handler(BaseHTTPRequestHandler):
    """The HTTP routes of the mock, vLLM-shaped: ``GET /health``, ``/v1/models`` (and
    llama-server's ``/props``); ``POST /v1/chat/completions``, ``/v1/completions``, the
    flavour's tokenize route and llama-server's ``/apply-template``. Errors are OpenAI-style
    JSON bodies.
    """
    server_version = "benchforge-mock/1"
    protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn (vLLM) serves; every reply is sized
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    state: MockState  # set on the subclass made in make_server

    def log_message(self, format: str, *args: Any) -> None:  # quiet; the launcher keeps the log
        """Quiet: no per-request line on stderr (the launcher keeps the server log)."""
        pass

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._send(status, {"error": {"message": message, "type": "invalid_request_error",
                                      "code": status}})

    def do_GET(self) -> None:
        """``/health`` (not for llama-cpp-python, which has none), ``/v1/models`` with the
        served name, llama-server's ``/props`` (its default sampling settings); 404 otherwise.
        """
        if self.path == "/props" and self.state.flavour == "llama-server":
            self._send(200, {"default_generation_settings": {
                "params": {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05,
                           "seed": -1}}, "model_path": "/models/mock.gguf"})
        elif self.path == "/health" and self.state.flavour != "llama-cpp-python":
            self._send(200, {})
        elif self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [
                {"id": self.state.served_name, "object": "model", "owned_by": "benchforge"}]})
        else:
            self._error(404, f"no route {self.path}")

    def do_POST(self) -> None:
        """A completion request: 503 for the first ``fail_first`` requests, 404 for another
        model name, 400 for a prompt without an answer; else the answer for the prompt's sha256
        (cut at the request's ``stop`` like vLLM, ``n`` choices, usage counted with
        :func:`count_tokens`). Also the tokenize and apply-template routes of the flavour.
        """
        length = int(self.headers.get("Content-Length", "0"))
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            self._error(400, "body is not JSON")
            return
        route = {"vllm": "/tokenize", "llama-server": "/tokenize",
                 "llama-cpp-python": "/extras/tokenize"}.get(self.state.flavour)
        if self.path == route:
            self._tokenize(body)
            return
        if self.path == "/apply-template" and self.state.flavour == "llama-server":
            if self.state.chat_template is None:
                self._error(400, "this model has no chat template")
                return
            self._send(200, {"prompt": self._render(body)})
            return
        if self.path not in ("/v1/chat/completions", "/v1/completions"):
            self._error(404, f"no route {self.path}")
            return
        if self.state.log_requests:
            with self.state._lock, open(self.state.log_requests, "a") as fh:
                fh.write(json.dumps({"path": self.path, "body": body}) + "\n")
        if self.state.take_failure():
            self._error(503, "transient failure (mock --fail-first)")
            return
        if body.get("model") != self.state.served_name:
            self._error(404, f"The model `{body.get('model')}` does not exist.")
            return
        chat = self.path == "/v1/chat/completions"
        if chat:
            prompt_text = json.dumps(body.get("messages", []))
            key = messages_sha256(body.get("messages", []))
        else:
            prompt_text = str(body.get("prompt", ""))
            key = text_sha256(prompt_text)
        if key not in self.state.answers:
            self._error(400, f"mock server has no answer for prompt sha256 {key}")
            return
        if self.state.delay_s:
            time.sleep(self.state.delay_s)
        entry = self.state.answers[key]
        reply = entry if isinstance(entry, dict) else {"completion": entry}
        text: str | None = reply["completion"]
        finish = "stop"
        if text is not None:
            text, finish = apply_stop(text, None if reply.get("ignore_stop")
                                      else body.get("stop"))
        finish = reply.get("finish_reason") or finish
        n = int(body.get("n") or 1)
        prompt_tokens = count_tokens(prompt_text)
        if chat and self.state.flavour == "llama-cpp-python" and self.state.chat_template:
            prompt_tokens = len(self._render(body))  # one token per rendered character
        usage: dict[str, Any] = {"prompt_tokens": prompt_tokens,
                                 "completion_tokens": n * count_tokens(text or "")}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if "reasoning_tokens" in reply:
            usage["completion_tokens_details"] = {"reasoning_tokens": reply["reasoning_tokens"]}
        if chat:
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if "reasoning_content" in reply:
                message["reasoning_content"] = reply["reasoning_content"]
            choices = [{"index": i, "message": dict(message),
                        "finish_reason": finish, "logprobs": None} for i in range(n)]
            obj = "chat.completion"
        else:
            choices = [{"index": i, "text": text, "finish_reason": finish, "logprobs": None}
                       for i in range(n)]
            obj = "text_completion"
        reply = {"id": f"cmpl-{uuid.uuid4().hex}", "object": obj,
                 "created": int(time.time()), "model": self.state.served_name,
                 "choices": choices, "usage": usage}
        if self.state.flavour == "llama-server":
            predicted_ms = 1000 * (self.state.delay_s or 0.001)
            reply["timings"] = {"predicted_n": usage["completion_tokens"],
                                "predicted_ms": predicted_ms,
                                "predicted_per_second":
                                    1000 * usage["completion_tokens"] / predicted_ms}
        self._send(200, reply)
        with self.state._lock:
            self.state.answered += 1
            dying = 0 < self.state.die_after <= self.state.answered
        if dying:  # a server crashing mid-run (GPU fault, OOM kill)
            self.wfile.flush()
            os._exit(1)


    def _render(self, body: dict[str, Any]) -> str:
        from benchforge.chat_template import render

        assert self.state.chat_template is not None
        text = render(self.state.chat_template, body["messages"], self.state.special_tokens,
                      add_generation_prompt=bool(body.get("add_generation_prompt", True)),
                      **(body.get("chat_template_kwargs") or {}))
        return text + self.state.template_suffix

    def _tokenize(self, body: dict[str, Any]) -> None:
        """vLLM's ``POST /tokenize`` (a prompt, or messages rendered by the chat template),
        llama-server's (``content``), llama-cpp-python's ``/extras/tokenize`` (``input``)."""
        if "messages" in body and self.state.flavour == "vllm":
            if self.state.chat_template is None:
                self._error(400, "this model has no chat template")
                return
            text = self._render(body)
        else:
            text = str(body.get({"vllm": "prompt", "llama-server": "content",
                                 "llama-cpp-python": "input"}[self.state.flavour], ""))
        tokens = [ord(c) for c in text]
        self._send(200, {"count": len(tokens), "max_model_len": 16384, "tokens": tokens})


def make_server(host: str, port: int, state: MockState) -> ThreadingHTTPServer:
    """A threaded HTTP server on ``host:port`` serving ``state`` (vLLM's accept
    backlog, daemon threads so shutdown never waits on a client).
    """
    handler = type("BoundHandler", (Handler,), {"state": state})

    class Server(ThreadingHTTPServer):
        request_queue_size = 2048  # uvicorn's (vLLM's) backlog; the stdlib default is 5

    server = Server((host, port), handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> None:
    """``python -m benchforge.mock_server --port P --answers FILE --served-model-name M
    [--delay-s S] [--fail-first N] [--flavour F] [--chat-template FILE] ...``: serve until
    interrupted; prints one ready line with the URL.
    """
    parser = argparse.ArgumentParser(prog="python -m benchforge.mock_server",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--answers", type=Path, required=True)
    parser.add_argument("--served-model-name", required=True)
    parser.add_argument("--delay-s", type=float, default=0.0, help="sleep per request")
    parser.add_argument("--fail-first", type=int, default=0, help="answer 503 to N requests")
    parser.add_argument("--flavour", default="vllm",
                        choices=["vllm", "llama-cpp-python", "llama-server", "none"])
    parser.add_argument("--chat-template", type=Path, help="template file the server renders")
    parser.add_argument("--template-suffix", default="",
                        help="appended to every rendering (a server using another template)")
    parser.add_argument("--log-requests", type=Path, default=None,
                        help="append every completion request (path and JSON body) here")
    args = parser.parse_args(argv)
    state = MockState(load_answers(args.answers), args.served_model_name, args.delay_s,
                      args.fail_first, log_requests=args.log_requests)
    state.flavour = args.flavour
    state.template_suffix = args.template_suffix
    if args.chat_template:
        state.chat_template = args.chat_template.read_text(encoding="utf-8")
    server = make_server(args.host, args.port, state)
    print(f"mock server for {args.served_model_name} on http://{args.host}:{args.port}/v1 "
          f"({len(state.answers)} answers)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
