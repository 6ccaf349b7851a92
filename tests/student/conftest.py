"""Tiny full-scale parts, built from configs and saved to folders (nothing is downloaded): a T5
encoder with a T5 tokenizer trained here, and an AutoencoderKL that halves the image side."""

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import T5Config, T5EncoderModel, T5TokenizerFast

    folder = tmp_path_factory.mktemp("tiny-t5")
    unigram = Tokenizer(models.Unigram())
    unigram.pre_tokenizer = pre_tokenizers.Metaspace()
    corpus = ["a red circle on the left", "two blue squares", "the letter A in green", "three yellow triangles",
              "a purple square at the top right", "one orange circle below a blue triangle"]
    unigram.train_from_iterator(corpus * 10, trainers.UnigramTrainer(
        vocab_size=80, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>"))
    tokenizer = T5TokenizerFast(tokenizer_object=unigram, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                extra_ids=0)
    torch.manual_seed(0)
    model = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=24, d_kv=8, num_heads=3, d_ff=48,
                                    num_layers=2, pad_token_id=0, eos_token_id=1))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_vae(tmp_path_factory):
    from diffusers import AutoencoderKL

    folder = tmp_path_factory.mktemp("tiny-vae")
    torch.manual_seed(0)
    AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4,
        sample_size=32,
    ).save_pretrained(folder)
    return folder
