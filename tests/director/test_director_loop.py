"""The loop with its director served over HTTP on 127.0.0.1: rounds and verdicts are committed."""

from evolvedirector.config import parse_config
from evolvedirector.worlds.shapes.chat_server import ShapesChatServer
from evolvedirector.loop import Evolution
from evolvedirector.store import Store
from tests.helpers import check_run_invariants, tiny_config

KEY = "loop-test-key-5c0ffee"


def test_a_shapes_world_run_judged_by_a_served_director(tmp_path, monkeypatch):
    monkeypatch.setenv("EVOLVE_TEST_DIRECTOR_KEY", KEY)
    with ShapesChatServer(judge_accuracy=1.0, api_key=KEY) as server:
        data = tiny_config(tmp_path / "run", max_rounds=2)
        data["director"] = {
            "backend": "openai", "base_url": server.base_url, "model": server.model,
            "api_key_env": "EVOLVE_TEST_DIRECTOR_KEY", "panel_size": 64, "structured_output": "structured_outputs",
        }
        summaries = Evolution(parse_config(data)).run()
        requests = list(server.requests)
    assert [s.round for s in summaries] == [0, 1, 2]

    store = Store(tmp_path / "run" / "evolve.db")
    check_run_invariants(store, tmp_path / "run" / "images")
    rounds = store.rounds()
    verdicts = store.conn.execute("SELECT * FROM verdicts").fetchall()
    assert len(rounds) == 3 and len(verdicts) == sum(r["judged"] for r in rounds) > 0
    assert {v["winner"] for v in verdicts} <= {"student", "teacher"}
    # Three teachers per seed prompt: the served director chose each seed sample's image.
    assert store.conn.execute("SELECT COUNT(*) FROM candidates WHERE chosen = 1").fetchone()[0] >= 12
    # Every judgement and proposal went over HTTP: canvases for verdicts, text for expansions.
    canvases = [r for r in requests if isinstance(r["messages"][0]["content"], list)]
    assert len(canvases) >= 12 * 2 + len(verdicts)  # two comparisons per seed prompt's selection, then the verdicts
    assert all(r["structured_outputs"] == {"choice": ["A", "B"]} for r in canvases)
    expansions = [s for s in store.conn.execute("SELECT * FROM samples WHERE operation = 'expand'")]
    if any(v["winner"] == "teacher" for v in verdicts):
        assert expansions and any(isinstance(r["messages"][0]["content"], str) for r in requests)
    # The key reached the server (it refuses requests without it) but nothing the run wrote.
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "EVOLVE_TEST_DIRECTOR_KEY" in saved and KEY not in saved
    store.close()
    for path in (tmp_path / "run").rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
