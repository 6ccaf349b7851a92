"""The run configuration: every knob, its default, and what it means.

Defaults follow the paper (EvolveDirector, arXiv 2410.07133) where it gives one: select_ratio
0.2, extend_num 3, mutation_ratio 0.1, DPM-Solver 20 steps with guidance 4.5, AdamW lr 2e-5 with
weight decay 0.03 and eps 1e-10, 1000 warm-up steps, gradient clipping 1.0, EMA 0.9999. The
shapes-world demo (`configs/demo.yaml`) overrides the training recipe with one that learns in
minutes on a CPU.

Unknown fields are errors: a typo in a config file should stop the run, not be ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class WorldConfig(Section):
    name: Literal["shapes"] = "shapes"
    image_size: int = Field(32, ge=32, description="canvas side in pixels; text and counts need >= 32")
    heldout_per_domain: int = Field(10, ge=1, description="held-out evaluation prompts per domain")
    heldout_seed: int = 1234


class TeacherConfig(Section):
    name: str
    backend: Literal["shapes"] = "shapes"
    cost_per_image: float | None = Field(None, ge=0, description="dollars per image; None: the backend's price")


class DirectorConfig(Section):
    backend: Literal["shapes"] = "shapes"
    judge_accuracy: float = Field(0.9, ge=0, le=1, description="shapes judge: chance a verdict is not flipped")


class StudentConfig(Section):
    size: str = Field("shapes-s", description="a name from evolvedirector.student.SIZES")
    max_tokens: int = Field(16, ge=4, description="text tokens per caption (with mask)")
    prediction_type: Literal["v_prediction", "epsilon", "sample"] = "v_prediction"
    beta_schedule: Literal["squaredcos_cap_v2", "linear", "scaled_linear"] = "squaredcos_cap_v2"
    sample_steps: int = Field(20, ge=1, description="DPM-Solver steps for final samples and evaluation")
    guidance: float = Field(4.5, ge=0, description="classifier-free guidance scale")
    ema_decay: float = Field(0.9999, gt=0, lt=1)
    snr_gamma: float | None = Field(None, gt=0, description="min-SNR loss weighting gamma (None: plain MSE)")

    @model_validator(mode="after")
    def _known_size(self):
        from evolvedirector.student.sizes import get_size

        get_size(self.size)
        return self


class TrainConfig(Section):
    batch_size: int = Field(32, ge=1)
    lr: float = Field(2e-5, gt=0)
    weight_decay: float = Field(0.03, ge=0)
    adam_eps: float = Field(1e-10, gt=0)
    warmup_steps: int = Field(1000, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    caption_dropout: float = Field(0.1, ge=0, lt=1, description="share of captions replaced by the empty one")
    steps_per_round: int = Field(200, ge=1, description="optimizer steps between two director rounds")


class EvolveConfig(Section):
    seed_prompts: int = Field(200, ge=1, description="random prompts in the initial set")
    select_ratio: float = Field(0.2, gt=0, le=1, description="share of the set the director judges each round")
    extend_num: int = Field(3, ge=0, description="similar prompts added when the teacher wins")
    mutation_ratio: float = Field(0.1, ge=0, le=1, description="chance of a new unrelated prompt after a deletion")
    expand_with: Literal["same", "all"] = Field(
        "same", description="teachers asked for expanded prompts: the parent's teacher, or all (with selection)"
    )
    render_steps: int = Field(10, ge=1, description="DPM-Solver steps for the student's renders the director judges")
    render_guidance: float | None = Field(None, ge=0, description="guidance for those renders (None: student.guidance)")
    # Ablations (evolvedirector bench efficiency): switch one operation off at a time.
    discrimination: Literal["director", "random"] = Field(
        "director", description="random: the student 'wins' with probability random_student_win_rate, unjudged"
    )
    random_student_win_rate: float = Field(0.2, ge=0, le=1)
    expansion: bool = Field(True, description="False: a teacher win keeps the sample and adds nothing")
    deletion: bool = Field(True, description="False: a student win keeps the sample (mutation still applies)")
    evaluate_every_round: bool = Field(True, description="held-out accuracy after every round (False: never)")


class BudgetConfig(Section):
    max_rounds: int | None = Field(None, ge=0, description="rounds after the seed set")
    max_teacher_calls: int | None = Field(None, ge=1)
    max_dollars: float | None = Field(None, gt=0)
    max_minutes: float | None = Field(None, gt=0, description="wall-clock limit; no round starts that would pass it")

    @model_validator(mode="after")
    def _something_ends_the_run(self):
        if all(v is None for v in (self.max_rounds, self.max_teacher_calls, self.max_dollars, self.max_minutes)):
            raise ValueError("set at least one of max_rounds, max_teacher_calls, max_dollars, max_minutes")
        return self


class RunConfig(Section):
    out: Path = Field(Path("runs/demo"), description="run directory; an existing one is resumed")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, ge=1, description="torch CPU threads (None: torch's default)")
    world: WorldConfig = WorldConfig()
    teachers: list[TeacherConfig] = Field(
        default_factory=lambda: [TeacherConfig(name=n) for n in ("atlas", "quill", "tally")], min_length=1
    )
    director: DirectorConfig = DirectorConfig()
    student: StudentConfig = StudentConfig()
    train: TrainConfig = TrainConfig()
    evolve: EvolveConfig = EvolveConfig()
    budget: BudgetConfig = BudgetConfig(max_rounds=10)

    @model_validator(mode="after")
    def _distinct_teachers(self):
        names = [t.name for t in self.teachers]
        if len(set(names)) != len(names):
            raise ValueError(f"teacher names must be distinct, got {names}")
        return self


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file, the field and the reason."""


def format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        lines.append(f"  {where}: {item['msg']}")
    return "\n".join(lines)


def parse_config(data: dict, source: str = "<config>") -> RunConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"invalid configuration in {source}: expected a mapping of fields, got {type(data).__name__}")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source)) from None


def load_config(path: Path, overrides: dict | None = None) -> RunConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
    if overrides:
        data = {**data, **overrides}
    return parse_config(data, str(path))


def demo_config_path() -> Path:
    return Path(__file__).parent / "configs" / "demo.yaml"


def dump_config(config: RunConfig) -> str:
    """The resolved configuration as YAML (no secrets are ever part of it)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
