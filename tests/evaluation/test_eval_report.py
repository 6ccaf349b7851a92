"""report.html: rounds, the evaluation, lineage of samples, and human votes once there are any."""

import html
import re

from evolvedirector.evaluation.report import write_report
from evolvedirector.store import Store


def section(page: str, sample_id: int) -> str:
    match = re.search(rf'<section class="lineage" id="sample-{sample_id}">(.*?)</section>', page, re.S)
    assert match, f"no lineage section for sample {sample_id}"
    return html.unescape(match.group(1))


def test_report_explains_why_an_expanded_sample_is_in_the_set(evaluated_run):
    run_dir = evaluated_run[0]
    page = (run_dir / "report.html").read_text()
    store = Store(run_dir / "evolve.db")
    child = store.conn.execute("SELECT * FROM samples WHERE operation = 'expand' ORDER BY id DESC").fetchone()
    parent = store.sample(child["parent_id"])
    verdict = store.conn.execute(
        "SELECT * FROM verdicts WHERE sample_id = ? AND round = ?", (parent.id, child["round_added"])
    ).fetchone()
    store.close()
    assert verdict["winner"] == "teacher" and verdict["action"] == "expand"
    text = section(page, child["id"])
    assert f"expanded in round {child['round_added']} from sample #{parent.id}" in text
    assert f"verdict #{verdict['id']}" in text and "preferred the teacher" in text
    assert parent.prompt in text  # the chain goes on to the parent...
    assert "seed prompt of round 0" in text  # ...and back to a seed
    assert f"trains on {child['teacher']}'s image" in text


def test_report_names_the_teachers_compared_at_selection(evaluated_run):
    run_dir = evaluated_run[0]
    page = (run_dir / "report.html").read_text()
    store = Store(run_dir / "evolve.db")
    seed = store.conn.execute("SELECT * FROM samples WHERE operation = 'seed' ORDER BY id").fetchone()
    store.close()
    assert "chosen by the director among atlas, quill, tally" in section(page, seed["id"])


def test_report_shows_the_evaluation_and_grids_and_stays_offline(evaluated_run):
    run_dir = evaluated_run[0]
    page = (run_dir / "report.html").read_text()
    for heading in ("Rounds", "Student against the teachers (latest evaluation)", "Director verdicts",
                    "Accuracy per category", "FD-randconv", "Which teacher the set learns each category from",
                    "what the director judged"):
        assert heading in page
    assert page.count('<img class="grid" src="data:image/png;base64,') >= 8 * 4  # prompt x (student, 3 teachers)
    assert "No votes yet" in page
    # Nothing is fetched from the network: every source is embedded or a file of the run folder.
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert sources and all(s.startswith(("data:", "images/", "#")) for s in sources)
    for source in sources:
        if source.startswith("images/"):
            assert (run_dir / source).is_file()


def test_report_folds_in_human_votes_with_intervals(run_copy):
    store = Store(run_copy / "evolve.db")
    base = dict(prompt="a red circle on the left", domain="object", student_image="b" * 64, teacher_image="a" * 64)
    for preferred in ("student", "student", "teacher", "tie"):
        store.add_vote(**base, teacher="atlas", student_side="left", preferred=preferred)
    store.add_vote(**base, teacher="quill", student_side="right", preferred="teacher")
    write_report(store, run_copy)
    store.close()
    page = (run_copy / "report.html").read_text()
    assert "No votes yet" not in page and "5 votes" in page
    ab = page[page.index("Blind human preference"):]
    ab = ab[: ab.index("</table>")]
    rows = re.findall(r"<tr>(.*?)</tr>", ab)
    atlas_all = next(r for r in rows if "<td>atlas</td><td>all</td>" in r)
    assert "<td>4</td><td>0.50 [" in atlas_all and "<td>0.25 [" in atlas_all
    quill_all = next(r for r in rows if "<td>quill</td><td>all</td>" in r)
    assert "<td>1</td><td>0.00 [0.00, 0.00]</td><td>0.00 [0.00, 0.00]</td><td>1.00 [1.00, 1.00]</td>" in quill_all


def test_a_damaged_evaluation_file_does_not_stop_the_report(run_copy):
    (run_copy / "eval" / "eval.json").write_text('{"items": [{"no prompt": 1}], "teachers": ["atlas"]}')
    store = Store(run_copy / "evolve.db")
    write_report(store, run_copy)
    store.close()
    page = (run_copy / "report.html").read_text()
    assert "eval/eval.json is damaged" in page and "Lineage" in page
