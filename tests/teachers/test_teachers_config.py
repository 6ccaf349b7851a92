"""Teacher entries in YAML: one example per backend parses and builds; a bad entry is refused
with the field's path and the reason."""

import pytest
import yaml

from evolvedirector.config import ConfigError, RunConfig, TeacherConfig, dump_config, parse_config
from evolvedirector.teachers import build_teacher
from evolvedirector.teachers.openai_images import OpenAIImagesTeacher
from evolvedirector.teachers.queue_http import QueueTeacher

EXAMPLES = """
teachers:
  - {name: atlas}                        # a shapes-world teacher (backend: shapes is the default)
  - name: sdxl
    backend: diffusers
    model: stabilityai/stable-diffusion-xl-base-1.0  # a hub id in the hub cache, or a local folder
    devices: [cuda:0, cuda:1]            # one pipeline per device
    dtype: float16
    steps: 30
    guidance: 5.0
    sizes: {512: 1024x1024}              # requested side -> the size it draws at (then resized)
    cost_per_image: 0.002
  - name: gpt-image
    backend: openai
    model: gpt-image-1
    api_key_env: OPENAI_API_KEY          # the variable's NAME; the key itself stays in the environment
    cost_per_image: 0.042
    sizes: {512: 1024x1024}
    quality: medium
    concurrency: 8
    rate_limit_rpm: 50
    retry: {max_attempts: 5, backoff_s: 1.0, max_backoff_s: 60}
  - name: dalle3
    backend: openai
    model: dall-e-3
    response_format: url
    cost_per_image: 0.04
    extra: {style: natural}
  - name: flux-fal
    backend: queue
    base_url: https://queue.fal.run/fal-ai/flux/dev
    api_key_env: FAL_KEY
    auth_prefix: "Key "
    sizes: {512: square_hd}
    body: {num_inference_steps: 28}
    cost_per_image: 0.025
    concurrency: 16
    rate_limit_rpm: 600
  - name: flux-replicate
    backend: queue
    base_url: https://api.replicate.com/v1
    api_key_env: REPLICATE_API_TOKEN
    submit_path: /models/black-forest-labs/flux-schnell/predictions
    prompt_field: input.prompt
    seed_field: input.seed
    size_field: input.aspect_ratio
    default_size: "1:1"
    request_id_field: id
    status_path: /predictions/{request_id}
    result_path: null                    # the status answer holds the result
    image_field: output.0
    cost_per_image: 0.003
"""


def test_one_example_per_backend_parses_round_trips_and_builds(monkeypatch):
    config = parse_config(yaml.safe_load(EXAMPLES), "teachers.yaml")
    assert [t.backend for t in config.teachers] == ["shapes", "diffusers", "openai", "openai", "queue", "queue"]
    sdxl, gpt, dalle, fal, replicate = config.teachers[1:]
    assert sdxl.devices == ["cuda:0", "cuda:1"] and sdxl.sizes == {512: "1024x1024"}
    assert gpt.rate_limit_rpm == 50 and gpt.retry.max_attempts == 5 and dalle.response_format == "url"
    assert fal.submit_path == "" and fal.status_path == "/requests/{request_id}/status"
    assert replicate.result_path is None and replicate.image_field == "output.0"
    assert parse_config(yaml.safe_load(dump_config(config))) == config

    for name in ("OPENAI_API_KEY", "FAL_KEY", "REPLICATE_API_TOKEN"):
        monkeypatch.setenv(name, "sk-not-a-real-key")
    gpt_teacher = build_teacher(gpt)
    assert isinstance(gpt_teacher, OpenAIImagesTeacher) and gpt_teacher.concurrency == 8
    assert gpt_teacher.body(_request(512))["size"] == "1024x1024"
    assert gpt_teacher.body(_request(256))["size"] == "1024x1024"  # the default size
    fal_teacher, replicate_teacher = build_teacher(fal), build_teacher(replicate)
    assert isinstance(fal_teacher, QueueTeacher)
    assert fal_teacher.body(_request(512)) == {"num_inference_steps": 28, "prompt": "p", "seed": 7,
                                               "image_size": "square_hd"}
    assert replicate_teacher.body(_request(512)) == {"input": {"prompt": "p", "seed": 7, "aspect_ratio": "1:1"}}
    assert replicate_teacher.job_url(replicate.status_path, "a/b") == "https://api.replicate.com/v1/predictions/a%2Fb"


def _request(size):
    from evolvedirector.teachers import ImageRequest

    return ImageRequest("p", 7, size)


@pytest.mark.parametrize("entry, field, reason", [
    ({"name": "x", "backend": "openai"}, "teachers.0.openai.cost_per_image", "Field required"),
    ({"name": "x", "backend": "dalle"}, "teachers", "teachers.0.backend 'dalle' is neither a backend"),
    ({"name": "x", "backend": "queue", "cost_per_image": 0.1}, "teachers.0.queue.base_url", "Field required"),
    ({"name": "x", "backend": "queue", "cost_per_image": 0.1, "base_url": "ftp://x"},
     "teachers.0.queue.base_url", "http:// or https://"),
    ({"name": "x", "backend": "queue", "cost_per_image": 0.1, "base_url": "https://x", "status_path": "/s"},
     "teachers.0.queue.status_path", "{request_id}"),
    ({"name": "x", "backend": "openai", "cost_per_image": 0.1, "sizes": {512: "big"}},
     "teachers.0.openai.sizes.512", "not WIDTHxHEIGHT"),
    ({"name": "x", "backend": "openai", "cost_per_image": -1}, "teachers.0.openai.cost_per_image", "greater than or equal to 0"),
    ({"name": "x", "backend": "openai", "cost_per_image": 0.1, "concurrency": 0},
     "teachers.0.openai.concurrency", "greater than or equal to 1"),
    ({"name": "x", "backend": "diffusers", "model": "m", "devices": ["gpu0"]},
     "teachers.0.diffusers.devices", "not cpu, mps, cuda or cuda:N"),
    ({"name": "x", "backend": "diffusers", "model": "m", "seed_field": "s"},
     "teachers.0.diffusers.seed_field", "Extra inputs are not permitted"),
    ({"name": "atlas", "model": "m"}, "teachers.0.shapes.model", "Extra inputs are not permitted"),
])
def test_a_bad_teacher_entry_names_the_field_and_the_reason(entry, field, reason):
    with pytest.raises(ConfigError) as error:
        parse_config({"teachers": [entry]}, "bad.yaml")
    message = str(error.value)
    assert "bad.yaml" in message and f"{field}:" in message and reason in message


def test_the_shapes_default_is_unchanged():
    assert [(t.name, t.backend, t.cost_per_image) for t in RunConfig().teachers] == [
        ("atlas", "shapes", None), ("quill", "shapes", None), ("tally", "shapes", None)]
    assert TeacherConfig(name="quill").backend == "shapes"
    assert build_teacher(TeacherConfig(name="quill")).cost_per_image == 0.06
