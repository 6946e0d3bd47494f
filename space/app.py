"""benchforge leaderboard: a Gradio Space over the leaderboard table `benchforge publish` writes.

    LEADERBOARD=path/or/dir/with/leaderboard.parquet python space/app.py [--port 7860]

Reads ``leaderboard.parquet`` (one row per model x benchmark cell) and shows pass@1 with its
bootstrap CI (at the level the cells were aggregated with, ``ci_level``), pass@k, the
contamination windows, cost and licence, filterable by benchmark, licence (OSI-approved only)
and contamination window, with a link to each cell's provenance.
Self-contained (gradio, gradio_leaderboard, pandas, pyarrow): it runs as a Hugging Face
Space next to the published datasets without benchforge installed.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd

WINDOWS = {"all problems": "pass@1_all", "clean (after release)": "pass@1_clean",
           "contaminated (before release)": "pass@1_contaminated"}


def default_source() -> str:
    """Where the published table is: ``leaderboard_source.txt`` next to this file (written by
    `benchforge publish`, e.g. hf://datasets/<org>/benchforge-leaderboard), else ./leaderboard."""
    source = Path(__file__).with_name("leaderboard_source.txt")
    return source.read_text().strip() if source.exists() else "leaderboard"


def load(path: str | Path) -> pd.DataFrame:
    text = str(path)
    if text.startswith("hf://"):  # pandas reads the Hub through huggingface_hub's fsspec
        return pd.read_parquet(f"{text.rstrip('/')}/leaderboard.parquet")
    local = Path(text)
    if local.is_dir():
        local = local / "leaderboard.parquet"
    return pd.read_parquet(local)


def ci_levels(board: pd.DataFrame) -> list[float]:
    """The distinct interval levels of the board's rows (``ci_level``, e.g. 0.95); [] for a
    table published before the column existed."""
    if "ci_level" not in board:
        return []
    return sorted({float(v) for v in board["ci_level"] if pd.notna(v)})


def ci_label(board: pd.DataFrame) -> str:
    """``95% CI`` when every row has that level, else ``CI`` (each cell then names its own)."""
    levels = ci_levels(board)
    return f"{levels[0]:.0%} CI" if len(levels) == 1 else "CI"


def table(board: pd.DataFrame, window: str = "all problems") -> pd.DataFrame:
    """The displayed columns: the chosen window's pass@1 with its CI, licence and cost."""
    view = pd.DataFrame()
    view["model"] = board["model"]
    view["benchmark"] = board["benchmark"]
    column = WINDOWS.get(window, "pass@1_all")
    score = board[column] if column in board and window != "all problems" else board["pass@1"]
    view["pass@1 (%)"] = (100 * score).round(1)
    if window == "all problems":
        mixed = len(ci_levels(board)) > 1
        levels = board["ci_level"] if "ci_level" in board else [None] * len(board)
        view[ci_label(board)] = [
            f"[{100 * lo:.1f}, {100 * hi:.1f}]"
            + (f" ({float(level):.0%})" if mixed and pd.notna(level) else "")
            for lo, hi, level in zip(board["pass@1_ci_lo"], board["pass@1_ci_hi"], levels,
                                     strict=True)]
    for k in (5, 10):
        if f"pass@{k}" in board:
            view[f"pass@{k} (%)"] = (100 * board[f"pass@{k}"]).round(1)
    view["licence"] = board["license"].fillna("unknown")
    view["OSI"] = [value is True for value in board["osi_approved"]]  # unknown: not OSI
    if "canonical" in board:  # false: model.sampling=server (the server's own defaults)
        view["canonical"] = [value is not False for value in board["canonical"]]
    view["tasks"] = board["n_tasks"]
    view["samples"] = board["n_samples"]
    for cost, label in (("cost_gpu_hours", "GPU-h"), ("cost_completion_tokens", "tokens"),
                        ("cost_tokens_per_s", "tokens/s"), ("gpu_energy_wh", "GPU Wh"),
                        ("gpu_energy_wh_per_solved_task", "Wh / solved task"),
                        ("gpu_peak_memory_gb", "GPU peak GB")):
        if cost in board:
            view[label] = board[cost]
    view["provenance"] = [f"[provenance]({p})" for p in board["provenance"]]
    return view.sort_values(["benchmark", "pass@1 (%)"], ascending=[True, False])


def build(board: pd.DataFrame):  # -> gr.Blocks
    import gradio as gr
    from gradio_leaderboard import ColumnFilter, Leaderboard, SelectColumns

    with gr.Blocks(title="benchforge leaderboard") as app:
        levels = ci_levels(board)
        level = f"{levels[0]:.0%} " if len(levels) == 1 else ""
        gr.Markdown(f"# benchforge leaderboard\npass@1 with {level}bootstrap CIs over problems, "
                    "recomputed from raw verdicts. Non-OSI licences are shown, not hidden.")
        window = gr.Radio(list(WINDOWS), value="all problems", label="contamination window")
        view = table(board)
        leaderboard = Leaderboard(
            value=view, elem_id="leaderboard",
            datatype=["str", "str", "number", "str", *(["number"] * (len(view.columns) - 5)),
                      "markdown"],
            search_columns=["model"],
            select_columns=SelectColumns(default_selection=list(view.columns),
                                         cant_deselect=["model", "benchmark", "pass@1 (%)"],
                                         label="columns"),
            filter_columns=[ColumnFilter("benchmark", type="checkboxgroup", label="benchmark"),
                            ColumnFilter("OSI", type="boolean", default=False,
                                         label="OSI-approved licences only")])
        window.change(lambda w: table(board, w), inputs=window, outputs=leaderboard)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "7860")))
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    args = parser.parse_args()
    board = load(os.environ.get("LEADERBOARD") or default_source())
    build(board).launch(server_name=args.host, server_port=args.port, show_api=False)


if __name__ == "__main__":
    main()
