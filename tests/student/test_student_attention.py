"""Attention goes through torch's scaled_dot_product_attention (the flash and memory-efficient
kernels on a GPU), with the queries and keys already layer-normed; cross-attention takes the
caption mask only when there is one, and the training loss drops an all-ones mask when asked (by
default on CUDA), which changes nothing but the kernel."""

import pytest
import torch
import torch.nn.functional as F

from evolvedirector.bench.train import RandomCaptions
from evolvedirector.config import StudentConfig
from evolvedirector.student import Student
from evolvedirector.student.student import build_transformer, to_device


class Recorder:
    def __init__(self):
        self.calls = []
        self.sdpa = F.scaled_dot_product_attention

    def __call__(self, query, key, value, attn_mask=None, **kwargs):
        self.calls.append({"query": query, "key": key, "mask": attn_mask})
        return self.sdpa(query, key, value, attn_mask=attn_mask, **kwargs)


def forward(model, mask):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 32, 32, generator=generator)
    states = torch.randn(2, 16, 384, generator=generator)
    return model(x, encoder_hidden_states=states, timestep=torch.tensor([10, 500]), encoder_attention_mask=mask,
                 added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample


def test_every_attention_calls_sdpa_on_normalised_queries_and_keys(monkeypatch):
    model = build_transformer("tiny", 32, 3, 384).eval()
    recorder = Recorder()
    monkeypatch.setattr(F, "scaled_dot_product_attention", recorder)
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[:, 10:] = 0
    with torch.no_grad():
        forward(model, mask)
    depth = len(model.transformer_blocks)
    assert len(recorder.calls) == 2 * depth  # self- and cross-attention in every block
    self_attention, cross_attention = recorder.calls[0::2], recorder.calls[1::2]
    assert all(call["mask"] is None for call in self_attention)  # nothing keeps self-attention off flash
    assert all(call["mask"] is not None for call in cross_attention)
    for call in recorder.calls:
        for t in (call["query"], call["key"]):  # LayerNorm per head, no affine weights
            torch.testing.assert_close(t.mean(-1), torch.zeros_like(t.mean(-1)), atol=1e-4, rtol=0)
            torch.testing.assert_close(t.var(-1, unbiased=False), torch.ones_like(t.mean(-1)), atol=0.02, rtol=0)
        assert call["query"].stride(-1) == 1 and call["key"].stride(-1) == 1

    recorder.calls.clear()
    with torch.no_grad():
        forward(model, None)
    assert all(call["mask"] is None for call in recorder.calls)


@pytest.mark.parametrize("padded", [False, True])
def test_the_loss_drops_an_all_ones_caption_mask_when_asked_and_only_then(padded):
    torch.manual_seed(0)
    student = Student(StudentConfig(size="tiny", sample_steps=2), 32, text_encoder=RandomCaptions(16, 384, padded))
    with torch.no_grad():
        for p in student.model.parameters():  # zero-initialised projections would hide the attention
            p.normal_(0, 0.05, generator=torch.Generator().manual_seed(p.numel()))
    masks = []
    student.model.register_forward_pre_hook(
        lambda module, args, kwargs: masks.append(kwargs["encoder_attention_mask"]), with_kwargs=True)
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    prompts = ["a red circle on the left", "two blue squares", "the letter A in red"]

    def loss(drop):
        student.drop_full_masks = drop
        with torch.no_grad():
            return student.loss(student.model, images, prompts, torch.Generator().manual_seed(3), 0.0)

    assert student.drop_full_masks is None  # the default: on CUDA only; on a CPU the mask stays
    kept = loss(None)
    dropped = loss(True)
    assert masks[0] is not None
    assert (masks[1] is None) == (not padded)  # only a mask with every token valid is dropped
    torch.testing.assert_close(dropped, kept)  # an all-ones mask masks nothing


def test_to_device_without_cuda_is_a_plain_move():
    t = torch.ones(3)
    assert to_device(t, torch.device("cpu"), non_blocking=True) is t
