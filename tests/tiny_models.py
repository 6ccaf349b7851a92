"""Tiny full-scale parts, built from configs and saved to folders (nothing is downloaded): a T5
encoder with a unigram tokenizer trained on a given corpus, and an AutoencoderKL that halves the
image side, and a random Stable Diffusion pipeline made of such parts. Plain functions, shared by
the student's and the teachers' fixtures and the open-world tests."""

from __future__ import annotations

import json
from pathlib import Path


def build_tiny_t5(folder: Path, corpus: list[str], vocab_size: int, repeat: int) -> Path:
    """A 2-layer T5 encoder (d_model 24) with a unigram tokenizer of `vocab_size` trained on `corpus`."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import T5Config, T5EncoderModel, T5TokenizerFast

    unigram = Tokenizer(models.Unigram())
    unigram.pre_tokenizer = pre_tokenizers.Metaspace()
    unigram.train_from_iterator(corpus * repeat, trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>"))
    tokenizer = T5TokenizerFast(tokenizer_object=unigram, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                extra_ids=0)
    torch.manual_seed(0)
    model = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=24, d_kv=8, num_heads=3, d_ff=48,
                                    num_layers=2, pad_token_id=0, eos_token_id=1))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_tiny_vae(folder: Path) -> Path:
    """An AutoencoderKL with 4 latent channels that halves the image side (32 px -> 16 latents)."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4,
        sample_size=32,
    ).save_pretrained(folder)
    return folder


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


def build_tiny_sd_pipeline(folder: Path) -> Path:
    """A random StableDiffusionPipeline (1-layer CLIP, a 2-block UNet, the tiny VAE's layout) in `folder`/pipeline."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

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
