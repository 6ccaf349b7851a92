"""The run report: `report.html` and `report.png` (the series of every round, plotted).

Rebuilt after every round and by `evolvedirector eval`, from what is on disk alone (the store,
the content-addressed images, `eval/eval.json`), so it always shows what is committed. One static
page, no scripts and nothing fetched from the network:
- the rounds: set size, operations, refused proposals, teacher-win rate, teacher calls and spend,
  held-out accuracy (where the world grades exactly), or the director's held-out figures with
  their intervals (where it does not; loop/heldout.py);
- the set by category, and the director's proposals the world refused, by reason;
- the student against each teacher from the latest `evolvedirector eval` (director win rates with
  bootstrap intervals, accuracy per category, Fréchet distances) and a grid of its images;
- which teacher the set learns each category from (selection);
- blind human preference from the A/B page, once there are votes;
- the last judged round as a grid (prompt, student render, every teacher's image);
- the lineage of samples: why each image is in the training set.
Grid images are embedded (data URIs); lineage thumbnails are linked relative to the run folder
(`images/ab/abcd….png`), which keeps the page small for large sets.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from evolvedirector.evaluation.lineage import LineageIndex, Step, describe_verdict  # noqa: E402
from evolvedirector.evaluation.stats import OUTCOMES, format_rate, outcome_rates  # noqa: E402
from evolvedirector.store import Sample, Store, write_atomic  # noqa: E402
from evolvedirector.director.failures import describe_kinds  # noqa: E402
from evolvedirector.teachers.ledger import describe_spend  # noqa: E402

HASH = re.compile(r"[0-9a-f]{64}")
EMBED_LIMIT = 64 * 1024  # larger images are linked, not embedded
GRID_ROWS = 16  # prompts per grid
LINEAGE_LIMIT = 3000  # samples with a lineage section: all of them in small runs, the newest otherwise
AB_NOTE = "No votes yet. `evolvedirector ab RUN_DIR` serves the blind A/B page; votes appear here."
REFUSALS_SHOWN = 30  # the newest refused proposals listed word for word


class Raw(str):
    """HTML that is already escaped (an image tag, a link), put into a table as it is."""


def _columns(figures: Iterable[dict]) -> list[str]:
    """The categories of per-round figures, in the order they first appear (the world's), then "mean"."""
    seen = dict.fromkeys(k for f in figures for k in f if k != "mean")
    return [*seen, "mean"] if seen else []


def judged_figures(row: dict) -> dict:
    """A round's director held-out figures by category (loop/heldout.py); empty where none were made."""
    return row["metrics"].get("director_heldout", {}).get("categories", {})


def accuracy_columns(rounds: list[dict]) -> list[str]:
    """The categories held-out accuracy was graded in, in the world's order, then "mean"."""
    return _columns(r["metrics"].get("accuracy", {}) for r in rounds)


def judged_columns(rounds: list[dict]) -> list[str]:
    """Where the director measured the held-out prompts: its categories, then "mean"."""
    return _columns(judged_figures(r) for r in rounds)


def judged_measure(rounds: list[dict]) -> str:
    return next((r["metrics"]["director_heldout"]["measure"] for r in reversed(rounds)
                 if r["metrics"].get("director_heldout")), "")


def _plot_judged(ax, rounds: list[dict]) -> None:
    """A curve per category of the director's held-out figure, the mean's 95% interval shaded."""
    for category in judged_columns(rounds):
        cells = [(r["round"], judged_figures(r)[category]) for r in rounds if category in judged_figures(r)]
        x = [round for round, _ in cells]
        line, = ax.plot(x, [c["rate"] for _, c in cells], marker="o", linewidth=2.5 if category == "mean" else 1.0,
                        label=category)
        if category == "mean":  # each category's interval is in the rounds table; shading them all hides the lines
            ax.fill_between(x, [c["low"] for _, c in cells], [c["high"] for _, c in cells], color=line.get_color(),
                            alpha=0.2)
    measure = judged_measure(rounds).replace("win rate against the best teacher", "win rate vs best teacher")
    ax.set_title(f"held-out (director): {measure}", fontsize="medium")


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
    for domain in accuracy_columns(rounds):
        values = [r["metrics"].get("accuracy", {}).get(domain) for r in rounds]
        if any(v is not None for v in values):
            ax.plot(x, values, marker="o", linewidth=2.5 if domain == "mean" else 1.2, label=domain)
    ax.set_ylim(0, 1)
    ax.set_title("held-out accuracy" if accuracy_columns(rounds) else "held-out accuracy (no exact rules here)")
    if not accuracy_columns(rounds) and judged_columns(rounds):
        _plot_judged(ax, rounds)
    ax.set_xlabel("round")
    if ax.get_legend_handles_labels()[0]:  # runs without per-round evaluation have no series
        ax.legend(fontsize="small", ncol=2 if len(ax.get_legend_handles_labels()[0]) > 6 else 1)

    for ax in axes.flat:  # rounds are whole numbers
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _cell(value) -> str:
    return value if isinstance(value, Raw) else html.escape(str(value))


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def selection_table(store: Store) -> list[dict]:
    """Share of training samples taken from each teacher, per category (all ever added, and active)."""
    active: dict[tuple[str, str], int] = {}
    for sample in store.active_samples():
        active[(sample.domain, sample.teacher)] = active.get((sample.domain, sample.teacher), 0) + 1
    counts = store.selection_counts()
    totals: dict[str, int] = {}
    active_totals: dict[str, int] = {}
    for row in counts:
        totals[row["domain"]] = totals.get(row["domain"], 0) + row["n"]
        active_totals[row["domain"]] = active_totals.get(row["domain"], 0) + active.get(
            (row["domain"], row["teacher"]), 0)
    rows = []
    for row in counts:
        n_active = active.get((row["domain"], row["teacher"]), 0)
        rows.append({
            "domain": row["domain"], "teacher": row["teacher"], "samples": row["n"],
            "share": row["n"] / totals[row["domain"]], "active": n_active,
            "active_share": n_active / active_totals[row["domain"]] if active_totals[row["domain"]] else None,
        })
    return rows


def vote_rates(votes: list[dict], resamples: int = 1000) -> dict[str, dict[str, dict]]:
    """{teacher: {category or "all": win/tie/lose rates}} of the student in human votes."""
    outcome = {"student": "win", "tie": "tie", "teacher": "lose"}
    cells: dict[str, dict[str, list[str]]] = {}
    for vote in votes:
        by_domain = cells.setdefault(vote["teacher"], {})
        by_domain.setdefault(vote["domain"], []).append(outcome[vote["preferred"]])
        by_domain.setdefault("all", []).append(outcome[vote["preferred"]])
    return {
        teacher: {
            domain: outcome_rates(values, resamples=resamples)
            for domain, values in sorted(by_domain.items(), key=lambda kv: (kv[0] == "all", kv[0]))
        }
        for teacher, by_domain in sorted(cells.items())
    }


class _Images:
    """Image tags for content-addressed images: embedded when small, linked otherwise."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.root = run_dir / "images"
        self._embedded: dict[str, str] = {}

    def relative(self, digest: str) -> str:
        return f"images/{digest[:2]}/{digest}.png"

    def tag(self, digest: str | None, title: str = "", embed: bool = True, css: str = "") -> Raw:
        if not digest or not HASH.fullmatch(digest):
            return Raw('<span class="missing">no image</span>')
        path = self.root / digest[:2] / f"{digest}.png"
        if not path.is_file():
            return Raw('<span class="missing">missing</span>')
        source = self.relative(digest)
        if embed:
            if digest not in self._embedded and path.stat().st_size <= EMBED_LIMIT:
                self._embedded[digest] = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
            source = self._embedded.get(digest, source)
        lazy = "" if embed else ' loading="lazy"'
        label = html.escape(title)
        return Raw(f'<img class="{css}" src="{html.escape(source)}" title="{label}" alt="{label}"{lazy}>')


def _rounds_section(rounds: list[dict], refused: dict[int, int], spend: str,
                    director_failures: dict[int, dict[str, int]]) -> str:
    rows = []
    columns = accuracy_columns(rounds)
    judged = judged_columns(rounds)
    previous_calls, previous_dollars = 0, 0.0
    for r in rounds:
        accuracy = r["metrics"].get("accuracy", {})
        figures = judged_figures(r)
        calls, dollars = r["metrics"].get("calls", 0), r["metrics"].get("dollars", 0.0)
        rows.append([
            r["round"], r["set_size"], r["added"], r["deleted"], r["mutated"], refused.get(r["round"], 0), r["judged"],
            f"{r['teacher_wins'] / r['judged']:.2f}" if r["judged"] else "-",
            describe_kinds(director_failures.get(r["round"], {})) or "-",
            calls - previous_calls, f"{dollars - previous_dollars:.2f}", calls, f"{dollars:.2f}", r["train_step"],
            *(f"{accuracy[d]:.2f}" if d in accuracy else "-" for d in columns),
            *(format_rate(figures[c]) if c in figures else "-" for c in judged),
        ])
        previous_calls, previous_dollars = calls, dollars
    return "<h2>Rounds</h2>" + _table(
        ["round", "set", "added", "deleted", "mutated", "refused", "judged", "teacher-win", "director failed",
         "calls", "spend $",
         "calls total", "spend $ total", "step", *columns, *(f"held-out {c}" for c in judged)], rows,
    ) + ('<p class="note">Calls and spend of a round include teacher images bought by evaluations '
         "made since the round before. Judged counts usable verdicts only; a director call with no usable "
         "answer is counted under director failed, by kind, and changes nothing in the set.</p>"
         ) + (f'<p class="note">Held-out columns: the director\'s {html.escape(judged_measure(rounds))} on a '
              "fixed sample of held-out prompts, with a 95% bootstrap interval over prompts (the world has no "
              "exact rules). The reference images of a win rate were bought once, in the spend above.</p>"
              if judged else "") + f"<p>Teacher spend so far: {html.escape(spend)}.</p>"


def _categories_section(samples: Iterable[Sample], refusals: list[dict]) -> str:
    counts: dict[str, list[int]] = {}  # category -> [ever added, active, director-written]
    for sample in samples:
        row = counts.setdefault(sample.domain, [0, 0, 0])
        row[0] += 1
        row[1] += sample.round_deleted is None
        row[2] += sample.operation != "seed"
    parts = ["<h2>The set by category</h2>",
             _table(["category", "samples ever", "active", "added by the director"],
                    [[c, *n] for c, n in sorted(counts.items(), key=lambda kv: -kv[1][0])])]
    by_reason: dict[str, dict[str, int]] = {}
    for refusal in refusals:
        cell = by_reason.setdefault(refusal["reason"], {"expand": 0, "mutate": 0})
        cell[refusal["operation"]] += 1
    parts.append("<h2>Proposals the world refused</h2>")
    if not refusals:
        return "".join(parts) + '<p class="note">None so far.</p>'
    parts.append(_table(["reason", "expansions", "mutations", "all"],
                        [[reason, n["expand"], n["mutate"], n["expand"] + n["mutate"]]
                         for reason, n in sorted(by_reason.items(), key=lambda kv: -sum(kv[1].values()))]))
    newest = refusals[-REFUSALS_SHOWN:][::-1]
    parts.append(f'<p class="note">The newest {len(newest)} of {len(refusals)}, as the director wrote them:</p>'
                 + _table(["round", "from sample", "operation", "reason", "proposal"],
                          [[r["round"], "-" if r["parent_id"] is None else f"#{r['parent_id']}", r["operation"],
                            r["reason"], r["proposal"]] for r in newest]))
    return "".join(parts)


def _selection_section(store: Store) -> str:
    rows = [
        [r["domain"], r["teacher"], r["samples"], f"{r['share']:.2f}", r["active"],
         "-" if r["active_share"] is None else f"{r['active_share']:.2f}"]
        for r in selection_table(store)
    ]
    return ("<h2>Which teacher the set learns each category from</h2>"
            + _table(["category", "teacher", "samples ever", "share", "active", "active share"], rows))


def _rates_table(rates: dict[str, dict[str, dict]], what: str) -> str:
    rows = []
    for teacher, cells in rates.items():
        for domain, cell in cells.items():
            rows.append([teacher, domain, cell["n"], *(format_rate(cell[o]) for o in OUTCOMES)])
    return _table(["teacher", "category", what, "student preferred", "tie", "teacher preferred"], rows)


def load_eval(run_dir: Path) -> tuple[dict | None, str]:
    path = run_dir / "eval" / "eval.json"
    if not path.is_file():
        return None, "No evaluation yet: `evolvedirector eval RUN_DIR` adds the student against each teacher here."
    try:
        results = json.loads(path.read_text())
        if not isinstance(results, dict) or not isinstance(results.get("items"), list):
            raise ValueError("not an evaluation result")
        return results, ""
    except (ValueError, OSError) as error:
        return None, f"eval/eval.json could not be read ({type(error).__name__}); run `evolvedirector eval` again."


def _eval_section(results: dict | None, note: str, images: _Images) -> str:
    if results is None:
        return f'<h2>Student against the teachers</h2><p class="note">{html.escape(note)}</p>'
    director = results.get("director", {})
    orders = ", both orders (a verdict that follows the position is a tie)" if director.get("both_orders") else ""
    about = (f"{results.get('checkpoint')}, round {results.get('round')}, step {results.get('train_step')}; "
             f"{results.get('n_prompts')} {results.get('prompt_set')} prompts; director {director.get('backend')}"
             f"{orders}; rates with 95% bootstrap intervals.")
    parts = [
        "<h2>Student against the teachers (latest evaluation)</h2>",
        f'<p class="note">{html.escape(about)}</p>',
        "<h3>Director verdicts</h3>", _rates_table(results.get("win_rates", {}), "pairs"),
    ]
    if results.get("accuracy"):
        columns = list(results["accuracy"].get("student", {}))
        rows = [[model, *(f"{values[c]:.2f}" if c in values else "-" for c in columns)]
                for model, values in results["accuracy"].items()]
        parts += ["<h3>Accuracy per category (the world's exact rules)</h3>", _table(["model", *columns], rows)]
    frechet = results.get("frechet") or {}
    fid = results.get("fid") or {}
    header = ["teacher", str(frechet.get("feature", "FD"))] + (["FID"] if fid else [])
    rows = []
    for teacher in results.get("teachers", []):
        row = [teacher, _fmt(frechet.get("values", {}).get(teacher))]
        if fid:
            row.append(_fmt(fid.get("values", {}).get(teacher)))
        rows.append(row)
    parts += ["<h3>Fréchet distance, student against each teacher</h3>", _table(header, rows),
              f'<p class="note">{html.escape(str(frechet.get("feature")))}: '
              f'{html.escape(str(frechet.get("description")))}.'
              + ("" if fid else " FID proper is computed when `eval --inception PATH` names an Inception network.")
              + "</p>"]
    teachers = results.get("teachers", [])
    rows = []
    for item in results["items"][:GRID_ROWS]:
        row = [item["prompt"], Raw(images.tag(item.get("student_image"), "student", css="grid")
                                   + _mark(item.get("student_correct")))]
        for teacher in teachers:
            entry = item["teachers"].get(teacher, {})
            outcome = entry.get("outcome")
            label = {"win": "student wins", "tie": "tie", "lose": "teacher wins"}.get(outcome, "not judged")
            row.append(Raw(images.tag(entry.get("image"), teacher, css="grid") + _mark(entry.get("correct"))
                           + f'<br><span class="verdict {html.escape(str(outcome))}">{label}</span>'))
        rows.append(row)
    graded = any("student_correct" in item for item in results["items"])
    parts += [f"<h3>Samples (first {min(GRID_ROWS, len(results['items']))} of {len(results['items'])} prompts)</h3>",
              '<p class="note">' + ("✓ / ✗: correct by the world's rules; " if graded else "")
              + "the verdict is the director's.</p>",
              _table(["prompt", "student", *teachers], rows)]
    return "".join(parts)


def _mark(correct) -> str:
    if correct is None:
        return ""
    return ' <span class="ok">✓</span>' if correct else ' <span class="bad">✗</span>'


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _ab_section(store: Store) -> str:
    votes = store.votes()
    if not votes:
        return f'<h2>Blind human preference (A/B page)</h2><p class="note">{html.escape(AB_NOTE)}</p>'
    return (f"<h2>Blind human preference (A/B page)</h2><p class=\"note\">{len(votes)} votes; each shows the "
            "student's and one teacher's image of a prompt in random order; 95% bootstrap intervals.</p>"
            + _rates_table(vote_rates(votes), "votes"))


def _last_round_section(index: LineageIndex, images: _Images, teachers: list[str]) -> tuple[str, set[int]]:
    verdicts = [v for vs in index.verdicts.values() for v in vs]
    if not verdicts:
        return "", set()
    last = max(v["round"] for v in verdicts)
    shown = sorted((v for v in verdicts if v["round"] == last), key=lambda v: v["id"])[:GRID_ROWS]
    rows = []
    for verdict in shown:
        sample = index.samples[verdict["sample_id"]]
        candidates = {c["teacher"]: c["image_hash"] for c in index.candidates.get(sample.id, [])}
        candidates.setdefault(sample.teacher, sample.image_hash)
        row = [Raw(f'<a href="#sample-{sample.id}">#{sample.id}</a> {html.escape(sample.prompt)}'),
               Raw(images.tag(verdict["student_image"], "student", css="grid"))]
        for teacher in teachers:
            tag = images.tag(candidates.get(teacher), teacher, css="grid") if teacher in candidates else Raw("-")
            chosen = " (trains on)" if teacher == sample.teacher else ""
            row.append(Raw(tag + html.escape(chosen)))
        row.append(f"{verdict['winner']} won → {verdict['action']}")
        rows.append(row)
    return (f"<h2>Round {last}: what the director judged</h2>"
            f'<p class="note">The first {len(shown)} judged samples: the student\'s render, and each teacher image '
            "the sample's selection compared (the one it trains on is marked). The sample links to its lineage.</p>"
            + _table(["sample", "student", *teachers, "verdict"], rows)), {v["sample_id"] for v in shown}


def _lineage_section(index: LineageIndex, images: _Images, wanted: set[int]) -> str:
    ids = sorted(index.samples)
    chosen = set(ids) if len(ids) <= LINEAGE_LIMIT else set(ids[-LINEAGE_LIMIT:]) | wanted
    chosen &= set(ids)
    parts = ["<h2>Lineage: why each image is in the training set</h2>",
             f'<p class="note">{len(chosen)} of {len(ids)} samples'
             + ("" if len(chosen) == len(ids) else " (the newest and those shown above)")
             + ", newest first. Each entry follows the sample's parents back to a seed prompt.</p>"]
    for sample_id in sorted(chosen, reverse=True):
        steps = index.chain(sample_id)
        head = steps[0].sample
        parts.append(f'<section class="lineage" id="sample-{head.id}"><h3>sample #{head.id}: '
                     f"“{html.escape(head.prompt)}” ({html.escape(head.domain)})</h3><ol>")
        for position, step in enumerate(steps):
            parts.append("<li>" + _step_html(step, images, chosen, first=position == 0) + "</li>")
        parts.append("</ol></section>")
    return "".join(parts)


def _step_html(step: Step, images: _Images, rendered: set[int], first: bool) -> str:
    s = step.sample
    name = f'<a href="#sample-{s.id}">#{s.id}</a>' if (s.id in rendered and not first) else f"#{s.id}"
    text = [images.tag(s.image_hash, s.teacher, embed=False, css="thumb"),
            f"{name} “{html.escape(s.prompt)}”: {html.escape(step.origin)}. "
            f"It {html.escape(step.selection)}."]
    if step.cause is not None:
        text.append(" The student's render in that verdict: "
                    + images.tag(step.cause["student_image"], "student render", embed=False, css="thumb") + ".")
    if first and len(step.candidates) > 1:
        text.append(" Compared: " + " ".join(
            images.tag(c["image_hash"], c["teacher"], embed=False, css="thumb")
            + html.escape(c["teacher"] + (" (chosen)" if c["chosen"] else "")) for c in step.candidates))
    if step.judgements:
        text.append(" Judged: " + html.escape("; ".join(describe_verdict(v) for v in step.judgements)) + ".")
    text.append(f" Now: {html.escape(step.fate)}.")
    return "".join(text)


STYLE = """body{font-family:sans-serif;margin:2em;max-width:1400px}
table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;vertical-align:top}
td:first-child,th:first-child{text-align:left}.note{color:#555}img.grid{width:96px;image-rendering:pixelated}
img.thumb{width:40px;image-rendering:pixelated;vertical-align:middle;margin:0 4px}
.ok{color:#080}.bad{color:#b00}.verdict{font-size:85%}.win{color:#080}.lose{color:#b00}.missing{color:#999}
section.lineage{border-top:1px solid #ddd;padding:.3em 0}section.lineage:target{background:#ffd}
section.lineage h3{font-size:100%;margin:.4em 0}section.lineage li{margin:.3em 0}"""


def write_report(store: Store, run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    rounds = store.rounds()
    refusals = store.all_refusals()
    refused_per_round: dict[int, int] = {}
    for refusal in refusals:
        refused_per_round[refusal["round"]] = refused_per_round.get(refusal["round"], 0) + 1
    plot_path = run_dir / "report.png"
    plot_rounds(rounds, plot_path)
    images = _Images(run_dir)
    index = LineageIndex.from_store(store)
    results, note = load_eval(run_dir)
    teachers = sorted({s.teacher for s in index.samples.values()}
                      | {c["teacher"] for cs in index.candidates.values() for c in cs})
    if results:
        teachers = list(dict.fromkeys([*results.get("teachers", []), *teachers]))
    last_round, shown = _last_round_section(index, images, teachers)
    try:
        evaluation = _eval_section(results, note, images)
    except (KeyError, TypeError, AttributeError, ValueError) as error:
        # A damaged eval.json must not stop the loop, which rebuilds this page after every round.
        evaluation = _eval_section(None, f"eval/eval.json is damaged ({type(error).__name__}); "
                                         "run `evolvedirector eval` again.", images)
    plot = base64.b64encode(plot_path.read_bytes()).decode()
    name = html.escape(run_dir.name)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>EvolveDirector run: {name}</title>
<style>{STYLE}</style></head><body>
<h1>EvolveDirector run: {name}</h1>
<img src="data:image/png;base64,{plot}" alt="series per round">
{_rounds_section(rounds, refused_per_round, describe_spend(store), store.director_failures())}
{evaluation}
{_categories_section(index.samples.values(), refusals)}
{_selection_section(store)}
{_ab_section(store)}
{last_round}
{_lineage_section(index, images, shown)}
</body></html>
"""
    target = run_dir / "report.html"
    write_atomic(target, page.encode())
    return target
