"""The configs a user starts from: `configs/pixart-512.yaml` validates and says what it claims, its
`# REPLACE:` lines are exactly its paths, and its tiny twin (tests/configs/pixart-512-tiny.yaml)
has the same shape, so that a test of the twin speaks for the shipped file."""

import re
from pathlib import Path
from string import Template

import pytest
import yaml
from typer.testing import CliRunner

from evolvedirector.config import demo_config_path, load_config, parse_config
from evolvedirector.store import Store

PIXART_512 = demo_config_path().parent / "pixart-512.yaml"
TINY_TWIN = Path(__file__).parent / "configs" / "pixart-512-tiny.yaml"
# What a test of the twin fills its ${NAME} tokens with; here, values that only need to validate.
TOKENS = {
    "OUT": "/tmp/run", "PROMPTS": "/tmp/prompts.tsv", "TINY_PIPELINE": "/tmp/tiny-sd",
    "IMAGES_API_URL": "http://127.0.0.1:1", "CHAT_API_URL": "http://127.0.0.1:2/v1",
    "TINY_T5": "/tmp/tiny-t5", "TINY_VAE": "/tmp/tiny-vae", "TINY_PIXART": "/tmp/tiny-pixart",
}
REPLACE_LINE = re.compile(r"^\s*(?:- )?[\w]+:\s*(?P<value>[^#\s]+)\s*# REPLACE: \S")


def tiny_twin_data() -> dict:
    return yaml.safe_load(Template(TINY_TWIN.read_text()).substitute(TOKENS))


def leaves(data, where=()):
    """(path, value) of every scalar in nested mappings and lists."""
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else None
    if items is None:
        yield where, data
        return
    for key, value in items:
        yield from leaves(value, (*where, key))


def key_shape(data):
    """The keys of nested mappings, values left out. A mapping keyed by numbers (a teacher's
    side -> size table) is a value, not structure."""
    if isinstance(data, dict) and all(isinstance(key, str) for key in data):
        return {key: key_shape(value) for key, value in data.items()}
    if isinstance(data, list):
        return [key_shape(item) for item in data]
    return None


def test_pixart_512_validates_and_is_the_papers_first_stage():
    config = load_config(PIXART_512)
    assert (config.world.name, config.world.image_size) == ("prompts", 512)
    student = config.student
    assert (student.size, student.max_tokens, student.prediction_type, student.beta_schedule) == \
        ("XL/2", 120, "epsilon", "linear")
    assert (student.sample_steps, student.guidance) == (20, 4.5)
    assert [t.backend for t in config.teachers] == ["diffusers", "openai"]
    assert config.teachers[1].model == "gpt-image-1" and config.teachers[1].api_key_env == "OPENAI_API_KEY"
    assert config.director.backend == "openai" and "Qwen2-VL" in config.director.model
    assert config.director.structured_output == "structured_outputs"
    train = config.train
    assert (train.lr, train.weight_decay, train.adam_eps, train.warmup_steps, train.grad_clip) == \
        (2e-5, 0.03, 1e-10, 1000, 1.0)
    assert (train.mixed_precision, train.gradient_checkpointing, train.multi_aspect) == ("bf16", True, False)
    assert (config.evolve.select_ratio, config.evolve.extend_num, config.evolve.mutation_ratio) == (0.2, 3, 0.1)
    assert config.budget.max_dollars and config.budget.max_teacher_calls


def test_every_replace_line_is_a_path_and_every_path_is_marked():
    text = PIXART_512.read_text()
    marked = [line for line in text.splitlines() if "# REPLACE:" in line and not line.lstrip().startswith("#")]
    values = [REPLACE_LINE.match(line) for line in marked]
    assert all(values), [line for line, match in zip(marked, values) if not match]
    values = {match["value"] for match in values}
    assert all(re.fullmatch(r"/[\w.\-/]+", value) for value in values), values
    dumped = load_config(PIXART_512).model_dump(mode="json")
    # URL paths appended to a base_url (`probe_path: /models`) are not files.
    paths = {value for where, value in leaves(dumped)
             if isinstance(value, str) and value.startswith("/") and not str(where[-1]).endswith("_path")}
    assert values == paths  # every absolute path is one the user must replace, and is marked


def test_the_tiny_twin_mirrors_pixart_512_in_everything_but_values():
    big, tiny = yaml.safe_load(PIXART_512.read_text()), tiny_twin_data()
    assert key_shape(tiny) == key_shape(big)
    big_config, tiny_config = load_config(PIXART_512), parse_config(tiny, str(TINY_TWIN))
    assert [t.backend for t in tiny_config.teachers] == [t.backend for t in big_config.teachers]
    assert (tiny_config.world.name, tiny_config.director.backend) == (big_config.world.name, big_config.director.backend)
    # Each path the user replaces in the big one is a test-made placeholder in the twin.
    tiny_leaves = dict(leaves(tiny_config.model_dump(mode="json")))
    for where, value in leaves(big_config.model_dump(mode="json")):
        if isinstance(value, str) and value.startswith("/") and not str(where[-1]).endswith("_path"):
            assert tiny_leaves[where] in TOKENS.values(), where


@pytest.mark.timeout(300)
def test_the_tiny_twin_runs_on_a_cpu(tmp_path):
    """The shipped config's shape, end to end: a diffusers and an images-API teacher, an OpenAI
    chat director with structured outputs, a latent student started from a PixArt folder."""
    from open_world_helpers import build_prompt_t5, write_prompt_file
    from tiny_models import build_tiny_sd_pipeline, build_tiny_vae

    from evolvedirector.cli import app
    from evolvedirector.student.student import build_transformer
    from evolvedirector.testing.chat_server import OpenWorldChatServer
    from evolvedirector.testing.fake_images_api import FakeImageAPI

    t5, vae = build_prompt_t5(tmp_path / "t5"), build_tiny_vae(tmp_path / "vae")
    # The student's own starting point: a transformer of size `tiny` over 16x16 latents, 24-dim text.
    build_transformer("tiny", 16, 4, 24).save_pretrained(tmp_path / "student-init")
    with FakeImageAPI() as api, OpenWorldChatServer(seed=0) as chat:
        text = Template(TINY_TWIN.read_text()).substitute({
            "OUT": tmp_path / "run", "PROMPTS": write_prompt_file(tmp_path / "prompts.jsonl"),
            "TINY_PIPELINE": build_tiny_sd_pipeline(tmp_path), "IMAGES_API_URL": api.url,
            "CHAT_API_URL": chat.base_url, "TINY_T5": t5, "TINY_VAE": vae, "TINY_PIXART": tmp_path / "student-init",
        })
        (tmp_path / "tiny.yaml").write_text(text)
        # --no-check: the scripted server answers free text whatever structured_output asks (the
        # tolerant parser reads it), which the preflight rightly refuses (tests/test_check.py).
        result = CliRunner().invoke(app, ["run", str(tmp_path / "tiny.yaml"), "--no-check"])
    assert result.exit_code == 0, result.output
    store = Store(tmp_path / "run" / "evolve.db")
    assert store.last_round() >= 1
    calls = store.conn.execute("SELECT teacher, status FROM teacher_calls").fetchall()
    assert {(c["teacher"], c["status"]) for c in calls} == {("sd3-medium", "done"), ("gpt-image", "done")}
    assert 8 <= store.spend()[0] <= 16  # the seed set from both teachers, within the twin's max_teacher_calls
    assert (tmp_path / "run" / "checkpoints" / "latest").is_file()


def test_the_offline_open_world_config_names_the_fake_servers_ports_and_the_shipped_prompts():
    config = load_config(demo_config_path().parent / "prompts-offline.yaml")
    assert config.world.name == "prompts" and str(config.world.prompts) == "prompts/PartiPrompts.tsv"
    assert (Path(__file__).resolve().parents[1] / config.world.prompts).is_file()
    urls = [t.base_url for t in config.teachers] + [config.director.base_url]
    assert all(url.startswith(("http://127.0.0.1:8801/", "http://127.0.0.1:8802/")) for url in urls), urls
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "offline_servers --images-port 8801 --chat-port 8802 &" in readme
