"""student.conv_ffn: a 3x3 depthwise convolution over the token grid inside each block's
feed-forward, zero at the start (SegFormer's Mix-FFN)."""

import pytest
import torch
from diffusers.models.attention import FeedForward
from student_helpers import assert_saved_loaded_and_exported_alike, randomised

from evolvedirector.config import StudentConfig
from evolvedirector.student import Student
from evolvedirector.student.transformer import ConvFeedForward

PROMPTS = ["two blue squares", "the letter T in red"]


@pytest.fixture(scope="module")
def conv_student():
    torch.manual_seed(0)
    student = Student(StudentConfig(size="tiny", conv_ffn=True, guidance=3.0), 32)
    randomised(student.ema_model)
    return student


def changed_tokens(feed_forward, grid, token):
    """(rows, cols) bools: which tokens' outputs move when only `token`'s input does."""
    rows, cols = grid
    x = torch.randn(1, rows * cols, 16, generator=torch.Generator().manual_seed(0))
    moved = x.clone()
    moved[0, token[0] * cols + token[1]] += 1.0
    if isinstance(feed_forward, ConvFeedForward):
        feed_forward.grid = grid
    with torch.no_grad():
        difference = (feed_forward(moved) - feed_forward(x)).abs().amax(dim=-1)
    return (difference > 1e-6).reshape(rows, cols)


def test_a_token_reads_its_eight_neighbours_and_no_farther():
    torch.manual_seed(0)
    plain = FeedForward(16, activation_fn="gelu-approximate")
    with_conv = ConvFeedForward(FeedForward(16, activation_fn="gelu-approximate"))
    torch.nn.init.normal_(with_conv.conv.weight)
    changed = changed_tokens(with_conv, (4, 5), (1, 1))
    assert changed[:3, :3].all() and changed.sum() == 9  # the 3x3 around (1, 1)
    assert changed_tokens(plain, (4, 5), (1, 1)).sum() == 1  # PixArt's feed-forward: the token alone
    with_conv.grid = (3, 3)
    with pytest.raises(ValueError, match="grid"):
        with_conv(torch.zeros(1, 20, 16))


def test_a_fresh_model_computes_what_pixart_computes():
    torch.manual_seed(0)
    plain = Student(StudentConfig(size="tiny"), 32).model
    conv = Student(StudentConfig(size="tiny", conv_ffn=True), 32).model
    assert all(isinstance(block.ff, ConvFeedForward) for block in conv.transformer_blocks)
    assert all(block.ff.conv.weight.abs().max() == 0 for block in conv.transformer_blocks)
    missing, unexpected = conv.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(".ff.conv." in name for name in missing)
    x, t = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)), torch.tensor([500, 20])
    states = torch.randn(2, 16, plain.config.caption_channels, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = plain(x, encoder_hidden_states=states, timestep=t).sample
        got = conv(x, encoder_hidden_states=states, timestep=t).sample
    torch.testing.assert_close(got, expected)


def test_the_prediction_depends_on_the_convolution_at_any_aspect(conv_student):
    model = conv_student.ema_model
    states, mask = conv_student.text.encode(PROMPTS[:1])
    for height, width in ((32, 32), (16, 32)):
        x, t = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(1)), torch.tensor([500])
        with torch.no_grad():
            base = conv_student.denoise(model, x, t, states, mask)
            conv = model.transformer_blocks[0].ff.conv
            saved = conv.weight.detach().clone()
            conv.weight.add_(0.5)
            moved = conv_student.denoise(model, x, t, states, mask)
            conv.weight.copy_(saved)
        assert base.shape == x.shape and not torch.allclose(base, moved)
        patch = model.config.patch_size
        assert all(block.ff.grid == (height // patch, width // patch) for block in model.transformer_blocks)


def test_save_load_and_export_keep_it(conv_student, tmp_path):
    assert_saved_loaded_and_exported_alike(conv_student, tmp_path, "conv_ffn", PROMPTS)
