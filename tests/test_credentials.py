"""No credential can enter a run's config (and so its config.yaml, logs, errors or report):
every URL field, every *_env field and every free-form request body goes through one check,
whose errors name the field, never the secret."""

import pytest
import yaml
from typer.testing import CliRunner

from evolvedirector.cli import app
from evolvedirector.config import ConfigError, dump_config, parse_config

SECRET = "Zq9SEKRIT7731"


def queue(**fields) -> dict:
    return {"name": "qu", "backend": "queue", "cost_per_image": 0.02, "base_url": "https://queue.example.com/flux",
            **fields}


def openai_teacher(**fields) -> dict:
    return {"name": "oa", "backend": "openai", "cost_per_image": 0.04, **fields}


def director(**fields) -> dict:
    return {"director": {"backend": "openai", "base_url": "http://127.0.0.1:8000/v1", "model": "m", **fields}}


REFUSED = [
    # userinfo and secret-looking query parameters, in every URL field
    ({"teachers": [queue(base_url=f"https://user:{SECRET}@queue.example.com/flux")]},
     "teachers.0.queue.base_url", "must not hold credentials"),
    ({"teachers": [queue(base_url=f"https://{SECRET}@queue.example.com/flux")]},
     "teachers.0.queue.base_url", "must not hold credentials"),
    ({"teachers": [openai_teacher(base_url=f"https://api.example.com/v1?key={SECRET}")]},
     "teachers.0.openai.base_url", "query parameter 'key'"),
    ({"teachers": [queue(base_url=f"https://q.example.com/x?model=flux&X-Amz-Signature={SECRET}")]},
     "teachers.0.queue.base_url", "query parameter 'X-Amz-Signature'"),
    ({"teachers": [queue(submit_path=f"/submit?access_token={SECRET}")]},
     "teachers.0.queue.submit_path", "query parameter 'access_token'"),
    ({"teachers": [queue(status_path=f"/requests/{{request_id}}/status?apiKey={SECRET}")]},
     "teachers.0.queue.status_path", "query parameter 'apiKey'"),
    ({"teachers": [queue(result_path=f"/requests/{{request_id}}?sig={SECRET}")]},
     "teachers.0.queue.result_path", "query parameter 'sig'"),
    (director(base_url=f"http://127.0.0.1:8000/v1?api_key={SECRET}"), "director", "base_url must not carry"),
    (director(base_url=f"https://u:{SECRET}@127.0.0.1:8000/v1"), "director", "base_url must not hold credentials"),
    # a key where the NAME of its variable belongs
    ({"teachers": [queue(api_key_env=f"sk_live_{SECRET}")]}, "teachers.0.queue.api_key_env", "not the key"),
    ({"teachers": [openai_teacher(api_key_env=f"sk-{SECRET}")]}, "teachers.0.openai.api_key_env", "not the key"),
    ({"teachers": [queue(api_key_env=f"SK_LIVE_{SECRET}")]}, "teachers.0.queue.api_key_env", "not the key"),
    ({"teachers": [queue(api_key_env=f"AKIA{SECRET.upper()}ABCD")]}, "teachers.0.queue.api_key_env", "not the key"),
    ({"teachers": [queue(api_key_env=f"KEY_{SECRET.upper()}ABCDEF")]}, "teachers.0.queue.api_key_env", "not the key"),
    (director(api_key_env=f"ghp_{SECRET}"), "director", "api_key_env must be the NAME"),
    # free-form request fields saved verbatim
    ({"teachers": [queue(body={"input": {"api_key": SECRET}})]}, "teachers.0.queue.body", "'input.api_key'"),
    ({"teachers": [queue(body={"Authorization": SECRET})]}, "teachers.0.queue.body", "'Authorization'"),
    ({"teachers": [queue(body={"user": f"Bearer {SECRET}"})]}, "teachers.0.queue.body", "looks like an API key"),
    ({"teachers": [queue(auth_prefix=f"Bearer {SECRET}")]}, "teachers.0.queue.auth_prefix", "not the key"),
    ({"teachers": [openai_teacher(extra={"token": SECRET})]}, "teachers.0.openai.extra", "'token'"),
    ({"teachers": [{"name": "sd", "backend": "diffusers", "model": "m", "call_kwargs": {"hf_token": SECRET}}]},
     "teachers.0.diffusers.call_kwargs", "'hf_token'"),
    (director(extra_body={"headers": {"X-Api-Key": SECRET}}), "director.extra_body", "'headers.X-Api-Key'"),
    (director(extra_body={"metadata": [f"sk-proj-{SECRET}"]}), "director.extra_body", "'metadata.0'"),
]


@pytest.mark.parametrize("data, field, reason", REFUSED)
def test_a_credential_in_any_saved_field_is_refused_naming_the_field_not_the_secret(data, field, reason):
    with pytest.raises(ConfigError) as error:
        parse_config(data, "my.yaml")
    message = str(error.value)
    assert f"{field}: " in message and reason in message, message
    assert SECRET not in message and SECRET.upper() not in message


def test_ordinary_urls_variable_names_and_bodies_pass_unchanged():
    config = parse_config({
        "teachers": [
            queue(base_url="https://queue.example.com/flux?api-version=2024-02-01&model=dev", api_key_env="FAL_KEY",
                  auth_prefix="Key ", body={"num_inference_steps": 28, "sync_mode": False, "keyframes": 2}),
            openai_teacher(base_url="http://127.0.0.1:8801/v1", api_key_env="OPENAI_API_KEY",
                           extra={"moderation": "low", "background": "opaque"}),
        ],
        **director(api_key_env="DIRECTOR_API_KEY",
                   extra_body={"skip_special_tokens": False, "chat_template_kwargs": {"enable_thinking": False}}),
    })
    assert config.teachers[0].base_url == "https://queue.example.com/flux?api-version=2024-02-01&model=dev"
    assert config.teachers[0].body["keyframes"] == 2
    assert config.director.extra_body["skip_special_tokens"] is False
    assert parse_config(yaml.safe_load(dump_config(config))) == config  # what is saved loads back


def test_the_run_command_refuses_it_in_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    data = {"out": str(out), "teachers": [queue(base_url=f"https://q.example.com/x?token={SECRET}")],
            "budget": {"max_rounds": 1}}
    path = tmp_path / "leaky.yaml"
    path.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2
    assert "teachers.0.queue.base_url" in result.output and "'token'" in result.output
    assert SECRET not in result.output
    assert not out.exists()


def test_a_key_pasted_as_a_field_name_is_not_printed_back():
    for data in ({f"sk-live-{SECRET}": 1}, {"teachers": [openai_teacher(**{f"Bearer {SECRET}": 1})]}):
        with pytest.raises(ConfigError) as error:
            parse_config(data, "pasted.yaml")
        assert SECRET not in str(error.value) and "(a key-like name): Extra inputs are not permitted" in str(error.value)
