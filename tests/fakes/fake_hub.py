"""A tiny Hugging Face Hub over HTTP, enough for ``huggingface_hub.snapshot_download``.

It serves repos given as ``{repo_id: {"sha": commit, "files": {path: bytes}}}`` (dataset
repos keyed ``datasets/<id>``): ``/api/{models|datasets}/{repo}/revision/{rev}`` (repo info),
``/api/{models|datasets}/{repo}/tree/{rev}`` (file listing) and
``/[datasets/]{repo}/resolve/{rev}/{path}`` (HEAD + GET with the Hub's headers). Point
``HF_ENDPOINT`` at it. Every request path is recorded in ``requests``.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeHub:
    def __init__(self, repos: dict[str, dict[str, Any]]) -> None:
        self.repos = repos
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                hub._serve(self, body=False)

            def do_GET(self) -> None:
                hub._serve(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _repo(self, repo_id: str, revision: str) -> dict[str, Any] | None:
        repo = self.repos.get(repo_id)
        if repo is None or revision not in ("main", repo["sha"]):
            return None
        return repo

    def _serve(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        from urllib.parse import unquote

        path = unquote(handler.path.split("?", 1)[0])
        self.requests.append(f"{handler.command} {path}")
        info = re.fullmatch(r"/api/(models|datasets)/(.+?)/revision/([^/]+)", path)
        tree = re.fullmatch(r"/api/(models|datasets)/(.+?)/tree/([^/]+)", path)
        resolve = re.fullmatch(r"/(.+?)/resolve/([^/]+)/(.+)", path)
        if info or tree:
            match = info or tree
            assert match is not None
            kind, repo_id, revision = match.groups()
            key = repo_id if kind == "models" else f"datasets/{repo_id}"
            repo = self._repo(key, revision)
            if repo is None:
                return self._send(handler, 404, b'{"error": "Repository not found"}',
                                  {"X-Error-Code": "RepoNotFound"}, body)
            if info:
                data: Any = {"id": repo_id, "modelId": repo_id, "sha": repo["sha"],
                             "siblings": [{"rfilename": f} for f in repo["files"]],
                             "private": False, "gated": False, "disabled": False}
            else:
                data = [{"type": "file", "path": f, "size": len(content),
                         "oid": hashlib.sha1(content).hexdigest()}
                        for f, content in repo["files"].items()]
            return self._send(handler, 200, json.dumps(data).encode(),
                              {"Content-Type": "application/json"}, body)
        if resolve:
            repo = self._repo(resolve.group(1), resolve.group(2))
            name = resolve.group(3)
            if repo is None or name not in repo["files"]:
                return self._send(handler, 404, b"Entry not found",
                                  {"X-Error-Code": "EntryNotFound"}, body)
            content = repo["files"][name]
            return self._send(handler, 200, content, {
                "X-Repo-Commit": repo["sha"],
                "ETag": f'"{hashlib.sha1(content).hexdigest()}"',
                "Content-Type": "application/octet-stream",
            }, body)
        return self._send(handler, 404, b"no route", {}, body)

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, data: bytes,
              headers: dict[str, str], body: bool) -> None:
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if body:
            handler.wfile.write(data)
