"""Aspect buckets in teacher requests: every backend asks its API for a size near the bucket's
shape, and every image comes back at exactly the bucket's (height, width)."""

import asyncio
import hashlib

import numpy as np
import pytest

from evolvedirector.config import OpenAITeacherConfig, QueueTeacherConfig
from evolvedirector.student.buckets import buckets_at
from evolvedirector.teachers import ImageRequest, Ledger, build_teacher
from evolvedirector.teachers.aspect import aspect_distance, closest_by_aspect, scale_to_area
from evolvedirector.teachers.base import idempotency_key
from evolvedirector.teachers.image_bytes import fit_to_request
from evolvedirector.worlds.shapes.grammar import all_prompts
from evolvedirector.worlds.shapes.teacher import ShapesTeacher
from tests.teachers.test_teachers_diffusers import diffusers_teacher, tiny_pipeline  # noqa: F401 (a fixture)

pytestmark = pytest.mark.timeout(60)

WIDE, TALL = buckets_at(32)[0], buckets_at(32)[-1]  # (22, 44) and (44, 22): h/w 0.5 and 2
GPT_IMAGE_SIZES = [(1024, 1024), (1536, 1024), (1024, 1536)]


def bought_images(store, images, teacher, requests) -> dict[str, np.ndarray]:
    """prompt -> the image bought for it through a fresh ledger."""
    purchases = asyncio.run(Ledger(store, images).buy(teacher, requests, round=0))
    assert all(p.error is None for p in purchases), [p.error for p in purchases]
    return {p.request.prompt: images.get(p.image_hash) for p in purchases}


def posted(api, route: str) -> dict[str, dict]:
    """prompt -> the body the fake API received on a route."""
    return {body["prompt"]: body for seen, body in api.bodies if seen == route}


# -- the shared rules ---------------------------------------------------------------------------


def test_the_closest_size_is_chosen_by_log_ratio():
    assert closest_by_aspect(GPT_IMAGE_SIZES, (704, 1408)) == (1536, 1024)  # wide bucket: wide size
    assert closest_by_aspect(GPT_IMAGE_SIZES, (1408, 704)) == (1024, 1536)
    assert closest_by_aspect(GPT_IMAGE_SIZES, (960, 1024)) == (1024, 1024)
    # 2:1 and 1:2 are equally far from a square; a plain ratio difference would call 2:1 farther.
    assert aspect_distance((2048, 1024), (1024, 1024)) == pytest.approx(aspect_distance((1024, 2048), (1024, 1024)))
    # w/h 1.45: nearer 2 than 1 in log-ratio (0.32 against 0.37), though nearer 1 in difference.
    assert closest_by_aspect([(1024, 1024), (2048, 1024)], (1000, 1450)) == (2048, 1024)
    with pytest.raises(ValueError):
        closest_by_aspect([], WIDE)


def test_a_bucket_scaled_to_an_area_keeps_its_aspect_on_the_64_grid():
    assert scale_to_area((1024, 1024), 1024 * 1024) == (1024, 1024)
    width, height = scale_to_area((704, 1408), 1024 * 1024)  # (width, height) out of (height, width)
    assert width % 64 == 0 and height % 64 == 0 and width > height
    assert width * height == pytest.approx(1024 * 1024, rel=0.1) and width / height == pytest.approx(2, rel=0.1)
    assert scale_to_area(WIDE, 100) == (64, 64)  # never a side below one grid step


def test_an_image_is_cropped_to_the_bucket_at_its_centre_then_resized():
    image = np.arange(40 * 40 * 3, dtype=np.uint8).reshape(40, 40, 3)
    np.testing.assert_array_equal(fit_to_request(image, ImageRequest("p", 0, 32, bucket=(20, 40))), image[10:30])
    np.testing.assert_array_equal(fit_to_request(image, ImageRequest("p", 0, 32, bucket=(40, 20))), image[:, 10:30])
    assert fit_to_request(np.zeros((64, 64, 3), np.uint8), ImageRequest("p", 0, 32, bucket=WIDE)).shape == (22, 44, 3)
    assert fit_to_request(np.zeros((48, 64, 3), np.uint8), ImageRequest("p", 0, 32)).shape == (32, 32, 3)


# -- the backends -------------------------------------------------------------------------------


def test_openai_asks_for_the_accepted_size_closest_to_the_bucket(api, openai_teacher, store, images):
    teacher = openai_teacher(api, aspect_sizes=["64x64", "96x64", "64x96"])
    bought = bought_images(store, images, teacher, [
        ImageRequest("wide", 0, 32, bucket=WIDE), ImageRequest("tall", 0, 32, bucket=TALL),
        ImageRequest("square", 0, 32),
    ])
    sizes = {prompt: body["size"] for prompt, body in posted(api, "generate").items()}
    assert sizes == {"wide": "96x64", "tall": "64x96", "square": "32x32"}  # square: default_size, as before
    assert {prompt: image.shape for prompt, image in bought.items()} == {
        "wide": (*WIDE, 3), "tall": (*TALL, 3), "square": (32, 32, 3),
    }


def test_openai_aspect_sizes_default_to_gpt_image_1_and_take_dall_e_3(api, openai_teacher):
    wide = ImageRequest("p", 0, 1024, bucket=(704, 1408))
    assert openai_teacher(api).body(wide)["size"] == "1536x1024"
    dall_e_3 = openai_teacher(api, model="dall-e-3", aspect_sizes=["1024x1024", "1792x1024", "1024x1792"])
    assert dall_e_3.body(wide)["size"] == "1792x1024"
    assert dall_e_3.body(ImageRequest("p", 0, 1024, bucket=(1408, 704)))["size"] == "1024x1792"


@pytest.mark.parametrize("size_format, sent", [
    ("object", {"width": 384, "height": 192}),  # 2:1 at the area of 256x256, on the 64 grid
    ("wxh", "384x192"),
    ("none", "256x256"),  # today's value; the image is cropped to the bucket
])
def test_queue_sends_the_bucket_size_in_the_configured_format(api, queue_teacher, store, images, size_format, sent):
    teacher = queue_teacher(api, default_size="256x256", aspect_size_format=size_format)
    bought = bought_images(store, images, teacher, [ImageRequest("wide", 0, 32, bucket=WIDE),
                                                     ImageRequest("square", 0, 32)])
    bodies = posted(api, "submit")
    assert bodies["wide"]["image_size"] == sent
    assert bodies["square"]["image_size"] == "256x256"
    drawn = {job.prompt: job.size for job in api.jobs.values()}  # (width, height) the fake drew at
    assert drawn["wide"] == ((256, 256) if size_format == "none" else (384, 192))
    assert bought["wide"].shape == (*WIDE, 3) and bought["square"].shape == (32, 32, 3)


def test_queue_scales_a_named_size_to_the_bucket_own_area(api):
    # fal's square_hd names no area we know: the bucket's own pixels are the scale.
    teacher = build_teacher(QueueTeacherConfig(
        name="fal", backend="queue", cost_per_image=0.025, base_url=f"{api.url}/queue", default_size="square_hd",
    ))
    assert teacher.body(ImageRequest("p", 0, 1024, bucket=(704, 1408)))["image_size"] == {"width": 1408, "height": 704}
    assert teacher.body(ImageRequest("p", 0, 1024))["image_size"] == "square_hd"


def test_a_pipeline_draws_the_bucket_aspect_at_its_own_area(tiny_pipeline, monkeypatch):  # noqa: F811
    from evolvedirector.teachers import diffusers_pipeline

    drawn = {}

    def recording_fit(image, request):
        drawn[request.prompt] = image.shape
        return fit_to_request(image, request)

    monkeypatch.setattr(diffusers_pipeline, "fit_to_request", recording_fit)
    teacher = diffusers_teacher(tiny_pipeline, devices=["cpu"], sizes={32: "256x256"})
    wide, square = ImageRequest("wide", 0, 32, bucket=WIDE), ImageRequest("square", 0, 32)
    assert teacher.request_size(wide) == (384, 192)  # (width, height): 2:1 at 256², on the 64 grid
    results = asyncio.run(teacher.generate([wide, square]))
    assert all(r.error is None for r in results), [r.error for r in results]
    assert drawn == {"wide": (192, 384, 3), "square": (256, 256, 3)}
    assert [r.image.shape for r in results] == [(*WIDE, 3), (32, 32, 3)]


def test_the_shapes_world_refuses_buckets_it_cannot_draw():
    teacher, prompt = ShapesTeacher("atlas"), all_prompts("object")[0]
    with pytest.raises(ValueError, match="single-scale"):
        asyncio.run(teacher.generate([ImageRequest(prompt, 0, 32, bucket=WIDE)]))
    [result] = asyncio.run(teacher.generate([ImageRequest(prompt, 0, 32)]))
    assert result.image.shape[:2] == (32, 32)


# -- the ledger's keys --------------------------------------------------------------------------


def test_a_square_key_is_unchanged_and_each_bucket_has_its_own():
    square = ImageRequest("a red circle", 7, 32)
    old_key = hashlib.sha256("\x1f".join(["oa", "a red circle", "7", "32"]).encode()).hexdigest()
    assert idempotency_key("oa", square) == old_key
    keys = {idempotency_key("oa", ImageRequest("a red circle", 7, 32, bucket=b)) for b in buckets_at(32)}
    assert len(keys) == len(buckets_at(32)) and old_key not in keys
