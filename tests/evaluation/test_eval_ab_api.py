"""The A/B page's API: the token, validated input, blind pairs, votes in the store, no traversal."""

import hashlib
import json

import httpx
import pytest
from fastapi.testclient import TestClient

from eval_helpers import live_server
from evolvedirector.evaluation.ab_server import AbError, create_app, new_token
from evolvedirector.store import Store

TOKEN = "test-token-0123456789abcdef"


@pytest.fixture
def client(run_copy):
    with TestClient(create_app(run_copy, TOKEN)) as test_client:
        test_client.headers["X-AB-Token"] = TOKEN
        yield test_client


def pair_hashes(run_dir):
    results = json.loads((run_dir / "eval" / "eval.json").read_text())
    return {(item["prompt"], teacher): (item["student_image"], entry["image"])
            for item in results["items"] for teacher, entry in item["teachers"].items()}


def test_every_api_call_needs_the_right_token(run_copy):
    with TestClient(create_app(run_copy, TOKEN)) as anonymous:
        pair_id = "A" * 22
        for method, path, body in (("GET", "/api/next", None), ("GET", f"/api/image/{pair_id}/left", None),
                                   ("POST", "/api/vote", {"pair_id": pair_id, "choice": "left"})):
            for headers in ({}, {"X-AB-Token": "wrong"}, {"X-AB-Token": TOKEN[:-1]},
                            {"X-AB-Token": "é".encode("latin-1") * 20}):
                response = anonymous.request(method, path, json=body, headers=headers)
                assert response.status_code == 401, (path, headers)
            # The token in the query string (how the page's address carries it) opens no API call.
            assert anonymous.request(method, f"{path}?token={TOKEN}", json=body).status_code == 401
        assert anonymous.get("/").status_code == 200  # the page itself holds no data


def test_a_pair_hides_which_image_is_the_students(client, run_copy):
    pair = client.get("/api/next").json()
    assert set(pair) == {"pair_id", "prompt", "left", "right", "votes"}
    hashes = pair_hashes(run_copy)
    text = json.dumps(pair)
    for student, teacher in hashes.values():
        assert student not in text and teacher not in text
    served = {}
    for side in ("left", "right"):
        response = client.get(pair[side])
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        for revealing in ("etag", "last-modified", "content-disposition"):
            assert revealing not in response.headers
        served[side] = hashlib.sha256(response.content).hexdigest()
    candidates = {h for (prompt, _), h2 in hashes.items() if prompt == pair["prompt"] for h in h2}
    assert served["left"] != served["right"] and set(served.values()) <= candidates


def test_a_vote_is_stored_with_the_side_the_student_was_on(client, run_copy):
    hashes = pair_hashes(run_copy)
    preferred = []
    for choice in ("left", "right", "tie"):
        pair = client.get("/api/next").json()
        left = hashlib.sha256(client.get(pair["left"]).content).hexdigest()
        response = client.post("/api/vote", json={"pair_id": pair["pair_id"], "choice": choice})
        assert response.status_code == 200 and response.json()["stored"] is True
        vote = Store(run_copy / "evolve.db").votes()[-1]
        assert hashes[(vote["prompt"], vote["teacher"])] == (vote["student_image"], vote["teacher_image"])
        student_left = left == vote["student_image"]
        assert vote["student_side"] == ("left" if student_left else "right")
        expected = "tie" if choice == "tie" else ("student" if (choice == "left") == student_left else "teacher")
        assert vote["preferred"] == expected
        preferred.append(vote["preferred"])
        # A pair is answered once; its id is then unknown.
        again = client.post("/api/vote", json={"pair_id": pair["pair_id"], "choice": choice})
        assert again.status_code == 404
    assert response.json()["votes"] == 3 and len(Store(run_copy / "evolve.db").votes()) == 3


def test_bad_input_is_refused_with_the_field(client, run_copy):
    pair = client.get("/api/next").json()
    bad_bodies = [
        ({"pair_id": pair["pair_id"], "choice": "up"}, "choice"),
        ({"pair_id": pair["pair_id"]}, "choice"),
        ({"pair_id": pair["pair_id"], "choice": "left", "student_side": "left"}, "student_side"),
        ({"pair_id": "../../evolve.db", "choice": "left"}, "pair_id"),
        ({"pair_id": 12345, "choice": "left"}, "pair_id"),
    ]
    for body, field in bad_bodies:
        response = client.post("/api/vote", json=body)
        assert response.status_code == 422, body
        assert field in json.dumps(response.json()["detail"])
    not_json = client.post("/api/vote", content=b"not json", headers={"content-type": "application/json"})
    assert not_json.status_code == 422
    unknown = client.post("/api/vote", json={"pair_id": "B" * 22, "choice": "left"})
    assert unknown.status_code == 404
    assert client.get(f"{pair['left'][:-4]}up").status_code == 422  # a side that is neither left nor right
    assert Store(run_copy / "evolve.db").votes() == []


def test_no_path_reaches_a_file_outside_the_image_store(run_copy):
    """Against a real server: uvicorn decodes %2F itself, which a test client would not show."""
    app = create_app(run_copy, TOKEN)
    with live_server(app) as base:
        with httpx.Client(base_url=base, headers={"X-AB-Token": TOKEN}) as http:
            pair = http.get("/api/next").json()["pair_id"]
            attempts = [
                "/api/image/..%2F..%2Fevolve.db/left", f"/api/image/{pair}/..%2F..%2Fevolve.db",
                f"/api/image/{pair}/%2e%2e", "/static/..%2Fab_server.py", "/static/..%2F..%2F..%2Fevolve.db",
                "/static/index.html%00.js", "/images/ab/x.png", "/evolve.db", "/config.yaml",
            ]
            for path in attempts:
                response = http.get(path)
                assert response.status_code in (404, 422), path
                assert b"SQLite format" not in response.content and b"import" not in response.content
            assert http.get("/static/ab.js").status_code == 200
            assert http.get("/").headers["content-security-policy"].startswith("default-src 'none'")


def test_the_page_refuses_to_start_without_an_evaluation(tmp_path):
    Store(tmp_path / "evolve.db").close()
    with pytest.raises(AbError, match="evolvedirector eval"):
        create_app(tmp_path, new_token())
    with pytest.raises(AbError, match="16 characters"):
        create_app(tmp_path, "short")


def test_a_large_body_is_refused_before_it_is_read_and_never_echoed(run_copy):
    """Against a real server: a declared and a chunked (undeclared) body over the cap get 413."""
    from evolvedirector.evaluation.ab_server import MAX_BODY_BYTES

    app = create_app(run_copy, TOKEN)
    with live_server(app) as base:
        with httpx.Client(base_url=base, headers={"X-AB-Token": TOKEN}) as http:
            pair = http.get("/api/next").json()["pair_id"]
            padding = "x" * (MAX_BODY_BYTES + 1)
            declared = http.post("/api/vote", json={"pair_id": pair, "choice": padding})
            assert declared.status_code == 413 and padding not in declared.text

            def chunks():
                yield b'{"pair_id": "' + pair.encode() + b'", "choice": "'
                for _ in range(64):
                    yield b"y" * 1024
                yield b'"}'

            chunked = http.post("/api/vote", content=chunks(), headers={"content-type": "application/json"})
            assert chunked.status_code == 413 and "yyyy" not in chunked.text
            # Under the cap, a refused value is named by its field and not sent back.
            small = http.post("/api/vote", json={"pair_id": pair, "choice": "z" * 1000})
            assert small.status_code == 422 and "choice" in small.text and "z" * 1000 not in small.text
            assert http.post("/api/vote", json={"pair_id": pair, "choice": "left"}).json()["stored"]
    assert len(Store(run_copy / "evolve.db").votes()) == 1
