"""The run report: `report.html` (tables) and `report.png` (the series of every round, plotted).

Rebuilt after every round from the store alone, so it always shows what is committed.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402

from evolvedirector.store import Store, write_atomic  # noqa: E402

DOMAINS = ("object", "relation", "count", "text")


def plot_rounds(rounds: list[dict], path: Path) -> None:
    x = [r["round"] for r in rounds]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), constrained_layout=True)

    ax = axes[0, 0]
    ax.plot(x, [r["set_size"] for r in rounds], marker="o", label="set size")
    ax.bar(x, [r["added"] for r in rounds], width=0.4, alpha=0.5, label="added")
    ax.bar([v + 0.4 for v in x], [r["deleted"] for r in rounds], width=0.4, alpha=0.5, label="deleted")
    ax.plot(x, [r["mutated"] for r in rounds], marker="x", linestyle="none", label="mutated")
    ax.set_title("dynamic set")
    ax.set_xlabel("round")
    ax.legend()

    ax = axes[0, 1]
    judged = [(r["round"], r["teacher_wins"] / r["judged"]) for r in rounds if r["judged"]]
    if judged:
        ax.plot(*zip(*judged), marker="o")
    ax.set_ylim(0, 1)
    ax.set_title("teacher-win rate (the director prefers the teacher)")
    ax.set_xlabel("round")

    ax = axes[1, 0]
    ax.plot(x, [r["metrics"].get("calls", 0) for r in rounds], marker="o", label="teacher calls")
    ax.set_xlabel("round")
    ax.set_ylabel("calls")
    twin = ax.twinx()
    twin.plot(x, [r["metrics"].get("dollars", 0) for r in rounds], color="tab:red", marker=".", label="spend ($)")
    twin.set_ylabel("dollars")
    ax.set_title("teacher spend (cumulative)")

    ax = axes[1, 1]
    for domain in (*DOMAINS, "mean"):
        values = [r["metrics"].get("accuracy", {}).get(domain) for r in rounds]
        if any(v is not None for v in values):
            ax.plot(x, values, marker="o", linewidth=2.5 if domain == "mean" else 1.2, label=domain)
    ax.set_ylim(0, 1)
    ax.set_title("held-out accuracy")
    ax.set_xlabel("round")
    if ax.get_legend_handles_labels()[0]:  # runs without per-round evaluation have no series
        ax.legend()

    fig.savefig(path, dpi=90)
    plt.close(fig)


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(store: Store, run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    rounds = store.rounds()
    plot_path = run_dir / "report.png"
    plot_rounds(rounds, plot_path)
    round_rows = []
    for r in rounds:
        accuracy = r["metrics"].get("accuracy", {})
        round_rows.append([
            r["round"], r["set_size"], r["added"], r["deleted"], r["mutated"], r["judged"],
            f"{r['teacher_wins'] / r['judged']:.2f}" if r["judged"] else "-",
            r["metrics"].get("calls", ""), f"{r['metrics'].get('dollars', 0):.2f}", r["train_step"],
            *(f"{accuracy[d]:.2f}" if d in accuracy else "-" for d in (*DOMAINS, "mean")),
        ])
    selection = [[row["domain"], row["teacher"], row["n"]] for row in store.selection_counts()]
    image = base64.b64encode(plot_path.read_bytes()).decode()
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>EvolveDirector run: {html.escape(run_dir.name)}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}</style></head><body>
<h1>EvolveDirector run: {html.escape(run_dir.name)}</h1>
<img src="data:image/png;base64,{image}" alt="series per round">
<h2>Rounds</h2>
{_table(["round", "set", "added", "deleted", "mutated", "judged", "teacher-win", "calls", "spend $", "step",
         *DOMAINS, "mean"], round_rows)}
<h2>Training samples per domain and teacher (all rounds)</h2>
{_table(["domain", "teacher", "samples"], selection)}
</body></html>
"""
    target = run_dir / "report.html"
    write_atomic(target, page.encode())
    return target
