"""A local diffusers pipeline as a teacher: a tiny random StableDiffusionPipeline built from
configs, saved to a folder and loaded by path (nothing downloaded), one copy per device."""

import asyncio
import json

import numpy as np
import pytest

pytestmark = pytest.mark.timeout(60)


def byte_characters() -> list[str]:
    """The 256 printable characters byte-level BPE tokenizers use for the 256 byte values."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    extra = [256 + i for i in range(256 - len(printable))]
    return [chr(c) for c in printable + extra]


def clip_tokenizer_files(folder):
    """A byte-level CLIP vocabulary with no merges: every character is a token."""
    chars = byte_characters()
    vocab = {token: i for i, token in enumerate(chars + [c + "</w>" for c in chars])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return len(vocab)


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = tmp_path_factory.mktemp("tiny-sd")
    tokens = folder / "tokenizer-files"
    tokens.mkdir()
    vocab_size = clip_tokenizer_files(tokens)
    torch.manual_seed(0)
    tokenizer = CLIPTokenizer(str(tokens / "vocab.json"), str(tokens / "merges.txt"), model_max_length=16)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=1,
        max_position_embeddings=16, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1,
    ))
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4,
    )
    pipeline = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=DDIMScheduler(clip_sample=False, steps_offset=1),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipeline.save_pretrained(folder / "pipeline")
    return folder / "pipeline"


def diffusers_teacher(path, **fields):
    from evolvedirector.config import DiffusersTeacherConfig
    from evolvedirector.teachers import build_teacher

    return build_teacher(DiffusersTeacherConfig(**{
        "name": "tiny-sd", "backend": "diffusers", "model": str(path), "devices": ["cpu", "cpu"], "steps": 2,
        "guidance": 1.0, "cost_per_image": 0.001, **fields,
    }))


def test_a_pipeline_loaded_by_path_draws_through_the_ledger_on_every_copy(tiny_pipeline, store, images, buy):
    teacher = diffusers_teacher(tiny_pipeline)
    assert teacher.concurrency == 2
    purchases = buy(teacher, ["a red circle", "two blue squares", "a green triangle", "the letter A"])
    assert all(p.image_hash is not None for p in purchases)
    drawn = [images.get(p.image_hash) for p in purchases]
    assert all(image.shape == (32, 32, 3) and image.dtype == np.uint8 for image in drawn)
    assert all(n > 0 for n in teacher.calls_per_copy)  # the calls were spread over both copies
    assert store.spend() == (4, pytest.approx(0.004))

    from evolvedirector.teachers import ImageRequest

    again, other_seed = asyncio.run(teacher.generate([ImageRequest("a red circle", 0, 32),
                                                      ImageRequest("a red circle", 1, 32)]))
    np.testing.assert_array_equal(again.image, drawn[0])  # deterministic per (prompt, seed)
    assert not np.array_equal(other_seed.image, drawn[0])


def test_a_pipeline_error_is_recorded_and_counted_not_raised(tiny_pipeline, store, buy):
    teacher = diffusers_teacher(tiny_pipeline, devices=["cpu"], sizes={32: "36x36"})  # not a multiple of 8
    [purchase] = buy(teacher, ["a red circle"])
    assert purchase.image_hash is None and purchase.error.startswith("pipeline_error")
    assert store.fault_counts() == {"tiny-sd": {"pipeline_error": 1}}
    assert store.spend() == (0, 0)
