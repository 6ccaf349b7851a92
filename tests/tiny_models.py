"""Tiny full-scale parts, built from configs and saved to folders (nothing is downloaded): a T5
encoder with a unigram tokenizer trained on a given corpus, and an AutoencoderKL that halves the
image side. Plain functions, shared by the student's fixtures and the open-world tests."""

from __future__ import annotations

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
