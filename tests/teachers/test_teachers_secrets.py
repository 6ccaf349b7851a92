"""The API key comes from the environment variable the config names, goes to the API's own
origin only, and reaches no error message, log line, ledger row or saved config."""

import logging

import pytest

from evolvedirector.config import ConfigError, dump_config, parse_config
from evolvedirector.teachers import build_teacher
from evolvedirector.testing.fake_images_api import FakeImageAPI

pytestmark = pytest.mark.timeout(30)

KEY = "sk-test-9f8e7d6c5b4a-SECRET"


def openai_entry(api, **fields) -> dict:
    return {"name": "oa", "backend": "openai", "cost_per_image": 0.04, "base_url": f"{api.url}/v1",
            "api_key_env": "EVOLVE_TEST_IMAGES_KEY", "default_size": "32x32",
            "retry": {"max_attempts": 2, "backoff_s": 0.01}, **fields}


def test_the_key_is_sent_to_the_api_and_not_to_the_host_of_a_result_url(monkeypatch, store, buy):
    monkeypatch.setenv("EVOLVE_TEST_IMAGES_KEY", KEY)
    with FakeImageAPI() as cdn, FakeImageAPI(api_key=KEY, files_from=cdn) as api:
        config = parse_config({"teachers": [openai_entry(api, response_format="url")]})
        teacher = build_teacher(config.teachers[0])
        [purchase] = buy(teacher, ["a red circle"])
        assert purchase.image_hash is not None
        assert api.auth_seen == [("generate", f"Bearer {KEY}")]
        assert cdn.auth_seen == [("file", None)]  # the image host never sees the key
        assert KEY not in repr(teacher)


def test_a_rejected_key_never_reaches_errors_logs_the_store_or_the_saved_config(
        monkeypatch, tmp_path, store, buy, caplog):
    monkeypatch.setenv("EVOLVE_TEST_IMAGES_KEY", KEY)
    with FakeImageAPI(api_key="sk-the-right-one") as api:  # answers 401 and echoes the key it got
        config = parse_config({"teachers": [openai_entry(api)]})
        teacher = build_teacher(config.teachers[0])
        with caplog.at_level(logging.DEBUG):
            [purchase] = buy(teacher, ["a red circle"])
    assert purchase.image_hash is None and purchase.error.startswith("auth: HTTP 401")
    assert "[REDACTED]" in purchase.error and KEY not in purchase.error
    assert KEY not in caplog.text
    store.close()
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    saved = dump_config(config)
    assert "EVOLVE_TEST_IMAGES_KEY" in saved and KEY not in saved


def test_a_missing_variable_is_named_and_a_pasted_key_is_refused_without_echo(monkeypatch):
    monkeypatch.delenv("EVOLVE_TEST_IMAGES_KEY", raising=False)
    with FakeImageAPI() as api:
        config = parse_config({"teachers": [openai_entry(api)]})
        with pytest.raises(ValueError, match="EVOLVE_TEST_IMAGES_KEY is not set"):
            build_teacher(config.teachers[0])
        with pytest.raises(ConfigError) as error:
            parse_config({"teachers": [openai_entry(api, api_key_env=KEY)]}, "my.yaml")
    assert "teachers.0.openai.api_key_env" in str(error.value) and KEY not in str(error.value)
