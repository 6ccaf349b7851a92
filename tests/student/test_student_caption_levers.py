"""Two caption levers beyond PixArt-α's transformer: student.pooled_caption (the caption's mean
token state joins the adaLN conditioning) and student.caption_positions (a learned embedding of
each caption token's place)."""

import pytest
import torch
from student_helpers import assert_saved_loaded_and_exported_alike, randomised

from evolvedirector.config import StudentConfig
from evolvedirector.student import Student
from evolvedirector.student.transformer import pool_caption

PROMPTS = ["two blue squares", "the letter T in red"]


@pytest.fixture(scope="module")
def pooled_student():
    torch.manual_seed(0)
    student = Student(StudentConfig(size="tiny", pooled_caption=True, caption_positions=True, guidance=3.0), 32)
    randomised(student.ema_model)
    return student


def test_caption_positions_are_one_per_token_and_change_the_prediction(pooled_student):
    model = pooled_student.ema_model
    positions = model.caption_projection.positions
    assert positions.shape == (pooled_student.config.max_tokens, model.inner_dim)
    fresh = Student(StudentConfig(size="tiny", caption_positions=True), 32).model.caption_projection.positions
    assert 0 < fresh.abs().max() < 0.2  # small, as PixArt initialises its caption MLP
    x, t = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)), torch.tensor([500])
    states, mask = pooled_student.text.encode(PROMPTS[:1])
    with torch.no_grad():
        base = pooled_student.denoise(model, x, t, states, mask)
        saved = positions.detach().clone()
        positions.add_(0.5)
        moved = pooled_student.denoise(model, x, t, states, mask)
        positions.copy_(saved)
        with pytest.raises(ValueError, match="caption positions"):
            model.caption_projection(torch.zeros(1, len(positions) + 1, states.shape[-1]))
    assert not torch.allclose(base, moved)


def test_the_pool_is_the_mean_of_the_valid_tokens_only():
    states = torch.arange(12.0).reshape(1, 4, 3)
    assert torch.equal(pool_caption(states, torch.tensor([[1, 1, 0, 0]])), torch.tensor([[1.5, 2.5, 3.5]]))
    assert torch.equal(pool_caption(states, None), states.mean(dim=1))


def test_the_prediction_depends_on_the_pooled_caption(pooled_student):
    model = pooled_student.ema_model
    x, t = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)), torch.tensor([500])
    states, mask = pooled_student.text.encode(PROMPTS[:1])
    with torch.no_grad():
        base = pooled_student.denoise(model, x, t, states, mask)
        # Another pool alone (the same tokens to cross-attend to) changes the prediction.
        added = {"resolution": None, "aspect_ratio": None, "pooled_caption": pool_caption(states, mask) + 1}
        moved = model(x, encoder_hidden_states=states, timestep=t, encoder_attention_mask=mask,
                      added_cond_kwargs=added).sample
    assert not torch.allclose(base, moved)
    with pytest.raises(ValueError, match="pooled_caption"):
        model(x, encoder_hidden_states=states, timestep=t, encoder_attention_mask=mask,
              added_cond_kwargs={"resolution": None, "aspect_ratio": None})


def test_a_fresh_pooled_student_starts_as_pixart_does(pooled_student):
    student = Student(StudentConfig(size="tiny", pooled_caption=True), 32)
    assert student.model.adaln_single.emb.caption_embedder.weight.abs().max() > 0  # small, not zero
    plain = Student(StudentConfig(size="tiny"), 32)
    assert "caption_embedder" not in str(dict(plain.model.named_parameters()).keys())


def test_save_load_and_export_keep_it(pooled_student, tmp_path):
    assert_saved_loaded_and_exported_alike(pooled_student, tmp_path, "pooled_caption", PROMPTS)
