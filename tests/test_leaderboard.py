"""The leaderboard Space (space/app.py) over a published run, loaded in headless Chromium.

CI installs Debian's `chromium` and sets BENCHFORGE_REQUIRE_CHROMIUM=1; elsewhere the browser
test skips when chromium is missing. The screenshot goes to $BENCHFORGE_ARTIFACTS (or the
test's tmp dir).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from _support import REPO, run_cli

from benchforge.engine import free_port
from benchforge.rundir import read_json


def space_module():
    spec = importlib.util.spec_from_file_location("leaderboard_space", REPO / "space" / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("BENCHFORGE_REQUIRE_CHROMIUM") == "1":
            pytest.fail("chromium missing but BENCHFORGE_REQUIRE_CHROMIUM=1")
        pytest.skip("chromium not installed (apt-get install chromium)")
    return path


def test_table_shows_cis_licences_and_windows(scored_run: Path, tmp_path: Path) -> None:
    assert run_cli("publish", f"run.root={scored_run}", cwd=tmp_path).returncode == 0
    app = space_module()
    board = app.load(scored_run / "default" / "publish" / "leaderboard")
    view = app.table(board)
    rows = {r["model"]: r for r in view.to_dict("records")}
    metrics = read_json(scored_run / "default" / "mock-model" / "humaneval" / "metrics.json")
    lo, hi = metrics["pass@1"]["ci95"]
    assert rows["mock-model"]["pass@1 (%)"] == round(100 * metrics["pass@1"]["value"], 1)
    assert rows["mock-model"]["95% CI"] == f"[{100 * lo:.1f}, {100 * hi:.1f}]"
    assert list(view["model"]) == ["oracle", "mock-model"]  # best first
    assert rows["oracle"]["provenance"].startswith("[provenance](")


def test_ci_column_shows_the_configured_level(scored_run: Path, tmp_path: Path) -> None:
    """aggregate.confidence=0.9 at publish: the leaderboard rows carry ci_level 0.9 and the
    Space's interval column says 90%, never a hard-coded 95%; rows of mixed levels name
    their own level under a plain "CI" header."""
    import pandas as pd

    proc = run_cli("publish", f"run.root={scored_run}", "aggregate.confidence=0.9", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    app = space_module()
    board = app.load(scored_run / "default" / "publish" / "leaderboard")
    assert set(board["ci_level"]) == {0.9}
    view = app.table(board)
    assert "90% CI" in view.columns and "95% CI" not in view.columns
    mixed = board.assign(ci_level=[0.9, 0.95][: len(board)])
    cells = app.table(mixed)["CI"].tolist()
    assert sorted(c.rsplit(" ", 1)[1] for c in cells) == ["(90%)", "(95%)"]
    assert app.ci_label(pd.DataFrame({"model": []})) == "CI"  # a board from before ci_level


@pytest.mark.slow
def test_leaderboard_page_in_headless_chromium(scored_run: Path, tmp_path: Path) -> None:
    browser = chromium()
    assert run_cli("publish", f"run.root={scored_run}", cwd=tmp_path).returncode == 0
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(REPO / "space" / "app.py"), "--port", str(port)],
        env={**os.environ, "LEADERBOARD": str(scored_run / "default" / "publish" / "leaderboard"),
             "GRADIO_ANALYTICS_ENABLED": "False"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                assert server.poll() is None, server.communicate()[0][-2000:]
                assert time.monotonic() < deadline, "leaderboard app did not start"
                time.sleep(0.5)
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000",
                 "--window-size=1400,900"]
        dom = subprocess.run([browser, *flags, "--dump-dom", url], capture_output=True,
                             text=True, timeout=120).stdout
        metrics = read_json(scored_run / "default" / "mock-model" / "humaneval" / "metrics.json")
        lo, hi = metrics["pass@1"]["ci95"]
        for text in ("benchforge leaderboard", "oracle", "mock-model", "66.7",
                     f"[{100 * lo:.1f}, {100 * hi:.1f}]", "OSI-approved licences only",
                     "contamination window"):
            assert text in dom, f"{text!r} not on the rendered page"
        artifacts = Path(os.environ.get("BENCHFORGE_ARTIFACTS", tmp_path))
        artifacts.mkdir(parents=True, exist_ok=True)
        shot = artifacts / "leaderboard.png"
        subprocess.run([browser, *flags, f"--screenshot={shot}", url], capture_output=True,
                       timeout=120, check=True)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    finally:
        server.terminate()
        server.wait(timeout=30)
