import pytest

from evolvedirector.config import ConfigError, RunConfig, demo_config_path, dump_config, load_config, parse_config


def test_demo_config_loads_with_paper_defaults_where_it_is_silent():
    config = load_config(demo_config_path())
    assert [t.name for t in config.teachers] == ["atlas", "quill", "tally"]
    assert (config.evolve.select_ratio, config.evolve.extend_num, config.evolve.mutation_ratio) == (0.2, 3, 0.1)
    assert config.train.weight_decay == 0.03 and config.train.adam_eps == 1e-10 and config.train.grad_clip == 1.0


def test_paper_defaults():
    config = RunConfig()
    assert config.train.lr == 2e-5 and config.train.warmup_steps == 1000
    assert config.student.ema_decay == 0.9999 and config.student.sample_steps == 20
    assert config.student.guidance == 4.5


@pytest.mark.parametrize("data, field, reason", [
    ({"evolve": {"select_ratio": 1.5}}, "evolve.select_ratio", "less than or equal to 1"),
    ({"evolve": {"extend_numb": 3}}, "evolve.extend_numb", "Extra inputs are not permitted"),
    ({"student": {"size": "huge"}}, "student", "unknown student size 'huge'"),
    ({"budget": {"max_rounds": None}}, "budget", "set at least one of"),
    ({"teachers": [{"name": "atlas"}, {"name": "atlas"}]}, "(top level)", "teacher names must be distinct"),
    ({"world": {"image_size": 16}}, "world.image_size", "greater than or equal to 32"),
    # Values that once passed and failed later (a traceback) or silently did something else.
    ({"world": {"image_size": 10**6}}, "world.image_size", "less than or equal to 4096"),
    ({"train": {"batch_size": 10**9}}, "train.batch_size", "less than or equal to 65536"),
    ({"train": {"batch_size": True}}, "train.batch_size", "expected a number, got true"),
    ({"budget": {"max_minutes": float("inf")}}, "budget.max_minutes", "finite number"),
    ({"student": {"guidance": float("nan")}}, "student.guidance", "finite number"),
    ({"seed": 2**70}, "seed", "less than 4294967296"),
    ({"seed": -1}, "seed", "greater than or equal to 0"),
])
def test_bad_config_names_the_field_and_the_reason(data, field, reason):
    with pytest.raises(ConfigError) as error:
        parse_config(data, "bad.yaml")
    message = str(error.value)
    assert "bad.yaml" in message and f"{field}:" in message and reason in message


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("evolve: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(listing)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\x00\x01binary\xff\xfe")
    with pytest.raises(ConfigError, match="binary.yaml is not UTF-8 text"):
        load_config(binary)
    empty = tmp_path / "empty.yaml"
    empty.write_text("\n  \n")  # would otherwise run every default into the default folder
    with pytest.raises(ConfigError, match="empty.yaml is empty"):
        load_config(empty)
    twice = tmp_path / "twice.yaml"
    twice.write_text("seed: 1\ntrain:\n  lr: 0.1\n  lr: 0.2\n")
    with pytest.raises(ConfigError, match="twice.yaml, line 4 is not valid YAML: the key 'lr' is given twice"):
        load_config(twice)


def test_resolved_config_round_trips(tmp_path):
    config = load_config(demo_config_path(), overrides={"out": str(tmp_path / "run")})
    saved = tmp_path / "config.yaml"
    saved.write_text(dump_config(config))
    assert load_config(saved) == config


@pytest.mark.parametrize("data, message", [
    ({"train": {"multi_aspect": True}}, "the shapes world is single-scale"),
    ({"world": {"name": "prompts"}}, "world 'prompts' needs `prompts`"),
    ({"world": {"prompts": "p.txt"}}, "set name: prompts"),
    ({"world": {"name": "prompts", "prompts": "p.txt", "heldout_share": 1.0}}, "world.heldout_share"),
])
def test_world_fields_are_checked_together(data, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(data)


def test_a_model_path_that_does_not_exist_is_refused_before_a_run(tmp_path):
    from evolvedirector.config import check_model_paths

    (tmp_path / "t5").mkdir()
    config = parse_config({
        "student": {"init_from": "/nonexistent/pixart", "text_encoder": str(tmp_path / "t5"), "vae": "org/sd-vae"},
        "teachers": [{"name": "d", "backend": "diffusers", "model": "~/no/pipe"}],
    })  # validation takes it: a saved run whose model folder moved can still be read
    with pytest.raises(ConfigError) as error:
        check_model_paths(config, "run.yaml")
    lines = str(error.value).splitlines()
    assert lines[0] == "invalid configuration in run.yaml:"
    assert lines[1:] == [
        "  student.init_from: /nonexistent/pixart does not exist (give a local folder or file, or a hub id like org/name)",
        "  teachers.0.model: ~/no/pipe does not exist (give a local folder or file, or a hub id like org/name)",
    ]
