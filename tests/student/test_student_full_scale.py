"""The full-scale student path on tiny parts: T5 features, VAE latents, size conditioning, any shape."""

import numpy as np
import pytest
import torch
from student_helpers import randomised

from evolvedirector.config import StudentConfig, TrainConfig
from evolvedirector.student import Student, TextEncoder
from evolvedirector.trainer import Trainer


@pytest.fixture(scope="module")
def latent_student(tiny_t5, tiny_vae):
    torch.manual_seed(0)
    config = StudentConfig(size="tiny-ms", text_encoder=str(tiny_t5), vae=str(tiny_vae), max_tokens=12,
                           size_conditioning=True, prediction_type="epsilon", beta_schedule="linear")
    student = Student(config, 32)
    randomised(student.ema_model)
    return student


def test_t5_features_come_padded_with_a_mask(tiny_t5):
    encoder = TextEncoder(str(tiny_t5), max_tokens=32)
    assert type(encoder.model).__name__ == "T5EncoderModel" and encoder.dim == 24
    assert type(encoder.tokenizer).__name__.startswith("T5Tokenizer")
    states, mask = encoder.encode(["a red", "two blue squares on the left of three yellow triangles" * 2])
    assert states.shape == (2, 32, 24) and mask.shape == (2, 32)
    # The short caption is padded (mask 0 at the end), the long one cut at 32 tokens.
    assert 0 < mask[0].sum() < 32 and mask[0, -1] == 0 and mask[1].sum() == 32
    assert not torch.equal(states[0], states[1])


def test_a_missing_text_encoder_or_vae_is_named(tmp_path):
    with pytest.raises(ValueError, match="student.text_encoder"):
        TextEncoder(str(tmp_path))
    with pytest.raises(ValueError, match="student.vae"):
        Student(StudentConfig(size="tiny", vae=str(tmp_path)), 32)


def test_latents_are_the_vae_posterior_mean_times_its_scaling_factor(latent_student, tiny_vae):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(tiny_vae)
    assert vae.config.scaling_factor == 0.18215  # the SD VAE's, diffusers' default
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    latents = latent_student.encode_images(images)
    assert latents.shape == (2, 4, 16, 16) and latent_student.channels == 4
    with torch.no_grad():
        torch.testing.assert_close(latents, vae.encode(images).latent_dist.mean * 0.18215)
        torch.testing.assert_close(latent_student.space.decode(latents), vae.decode(latents / 0.18215).sample)


def test_the_transformer_is_told_the_image_size_in_pixels(latent_student):
    seen = []
    model = latent_student.ema_model
    hook = model.register_forward_pre_hook(lambda m, args, kwargs: seen.append(kwargs["added_cond_kwargs"]),
                                           with_kwargs=True)
    try:
        images = latent_student.generate(["a red circle"], seed=0, steps=2, height=32, width=64)
    finally:
        hook.remove()
    assert images[0].shape == (32, 64, 3) and images[0].dtype == np.uint8
    resolution, aspect = seen[0]["resolution"], seen[0]["aspect_ratio"]
    assert resolution.tolist() == [[32.0, 64.0]] * 2 and aspect.tolist() == [[0.5]] * 2  # uncond and cond rows


def test_size_conditioning_changes_the_prediction(latent_student):
    from evolvedirector.student.diffusion import denoise

    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    states, mask = latent_student.text.encode(["two blue squares"])
    t = torch.tensor([500])
    with torch.no_grad():
        small = denoise(latent_student.ema_model, x, t, states, mask, size_conditioning=True, pixels_per_cell=2)
        large = denoise(latent_student.ema_model, x, t, states, mask, size_conditioning=True, pixels_per_cell=64)
    assert (small - large).abs().max() > 1e-4


def test_non_square_shapes_must_fit_the_grid(latent_student):
    with pytest.raises(ValueError, match="multiple of 4"):
        latent_student.generate(["a red circle"], height=32, width=34)


def test_a_latent_student_trains_on_cached_latents_with_its_size_embedders(tiny_t5, tiny_vae):
    torch.manual_seed(0)
    student = Student(StudentConfig(size="tiny-ms", text_encoder=str(tiny_t5), vae=str(tiny_vae), max_tokens=12,
                                    size_conditioning=True), 32)
    trainer = Trainer(student, TrainConfig(batch_size=4, lr=1e-3, warmup_steps=0, caption_dropout=0.0), device="cpu")
    embedder = student.model.adaln_single.emb.resolution_embedder.linear_1.weight
    before = embedder.detach().clone()
    latents = student.encode_images(torch.rand(4, 3, 32, 64) * 2 - 1)  # one non-square bucket
    prompts = ["a red circle", "two blue squares", "the letter A in green", "three yellow triangles"]
    loss = trainer.train(latents, prompts, 2)
    assert np.isfinite(loss) and loss > 0
    assert not torch.equal(before, embedder.detach())
