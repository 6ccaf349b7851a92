import numpy as np
import pytest
import torch

from evolvedirector.config import StudentConfig, TrainConfig
from evolvedirector.student import QKNormPixArtTransformer2DModel, Student, TextEncoder, has_qk_norm
from evolvedirector.student.student import build_transformer
from evolvedirector.trainer import Trainer


@pytest.fixture(scope="module")
def text_encoder():
    return TextEncoder(max_tokens=16)


def inputs(model, batch=2):
    generator = torch.Generator().manual_seed(0)
    size = model.config.sample_size
    x = torch.randn(batch, model.config.in_channels, size, size, generator=generator)
    states = torch.randn(batch, 16, model.config.caption_channels, generator=generator)
    mask = torch.ones(batch, 16, dtype=torch.long)
    mask[:, 10:] = 0
    return dict(hidden_states=x, encoder_hidden_states=states, timestep=torch.tensor([10, 500]),
                encoder_attention_mask=mask, added_cond_kwargs={"resolution": None, "aspect_ratio": None})


def randomised(model):
    """Zero-initialised layers would hide differences; give every weight a random value."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    return model.eval()


def test_qk_norm_survives_save_and_load(tmp_path):
    model = randomised(build_transformer("tiny", 32, 3, 384))
    assert has_qk_norm(model)
    model.save_pretrained(tmp_path / "transformer")
    loaded = QKNormPixArtTransformer2DModel.from_pretrained(tmp_path / "transformer").eval()
    assert loaded.config.qk_norm == "layer_norm"
    assert has_qk_norm(loaded)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs(loaded)).sample, model(**inputs(model)).sample)


def test_qk_norm_is_applied_and_kept_by_the_default_processor():
    model = randomised(build_transformer("tiny", 32, 3, 384))
    with torch.no_grad():
        with_norm = model(**inputs(model)).sample
        model.set_default_attn_processor()
        assert torch.equal(model(**inputs(model)).sample, with_norm)
        for block in model.transformer_blocks:
            for attention in (block.attn1, block.attn2):
                attention.norm_q = attention.norm_k = None
        without_norm = model(**inputs(model)).sample
    assert not has_qk_norm(model)
    assert (with_norm - without_norm).abs().max() > 1e-3


def test_pixart_initialisation_zeroes_the_output_and_cross_attention_projections():
    model = build_transformer("tiny", 32, 3, 384)
    assert torch.count_nonzero(model.proj_out.weight) == 0
    assert all(torch.count_nonzero(b.attn2.to_out[0].weight) == 0 for b in model.transformer_blocks)
    with torch.no_grad():
        assert torch.count_nonzero(model(**inputs(model)).sample) == 0


def test_text_encoder_pads_to_max_tokens_with_a_mask(text_encoder):
    states, mask = text_encoder.encode(["a red circle on the left", "the letter A in blue"])
    assert states.shape == (2, 16, 384) and mask.shape == (2, 16)
    assert mask[0].sum() == 8  # [CLS] a red circle on the left [SEP]
    again, _ = text_encoder.encode(["the letter A in blue"])
    torch.testing.assert_close(again[0], states[1])


def test_generate_is_deterministic_uint8_at_the_canvas_size(text_encoder):
    torch.manual_seed(0)
    student = Student(StudentConfig(size="tiny"), 32, text_encoder=text_encoder)
    randomised(student.ema_model)
    first = student.generate(["two red circles", "a blue square on the left"], seed=3, steps=3)
    second = student.generate(["two red circles", "a blue square on the left"], seed=3, steps=3)
    assert [im.shape for im in first] == [(32, 32, 3)] * 2 and first[0].dtype == np.uint8
    np.testing.assert_array_equal(first[0], second[0])
    assert not np.array_equal(first[0], first[1])


def test_training_resumes_from_a_checkpoint_exactly(tmp_path, text_encoder):
    config = TrainConfig(batch_size=4, lr=1e-3, warmup_steps=2)
    images = torch.rand(6, 3, 32, 32) * 2 - 1
    prompts = ["a red circle on the left", "two blue squares", "the letter A in red"] * 2

    def fresh():
        torch.manual_seed(0)
        student = Student(StudentConfig(size="tiny", ema_decay=0.9), 32, text_encoder=text_encoder)
        return student, Trainer(student, config, seed=5, device="cpu")

    student, trainer = fresh()
    trainer.train(images, prompts, 3)
    trainer.save(tmp_path / "ckpt")
    trainer.train(images, prompts, 3)

    resumed_student, resumed = fresh()
    resumed.load(tmp_path / "ckpt")
    assert resumed.step == 3
    resumed.train(images, prompts, 3)
    for a, b in zip(student.model.parameters(), resumed_student.model.parameters()):
        torch.testing.assert_close(a, b)
    for a, b in zip(student.ema_model.parameters(), resumed_student.ema_model.parameters()):
        torch.testing.assert_close(a, b)


def test_training_lowers_the_loss_on_a_fixed_batch(text_encoder):
    torch.manual_seed(0)
    student = Student(StudentConfig(size="tiny"), 32, text_encoder=text_encoder)
    trainer = Trainer(student, TrainConfig(batch_size=8, lr=1e-3, warmup_steps=0, caption_dropout=0.0),
                      device="cpu")
    images = torch.ones(8, 3, 32, 32)
    images[:, 0] = -1.0  # one flat colour: easy to learn
    prompts = ["a blue square in the center"] * 8
    first = trainer.train(images, prompts, 5)
    later = trainer.train(images, prompts, 40)
    assert later < 0.7 * first
