"""Parts of the open-world end-to-end test, built from configs on disk (nothing is downloaded):
a prompt file, a tiny T5 encoder with a tokenizer trained on that file's words, a tiny VAE that
halves the image side, and a tiny random PixArt-α pipeline made of them (a `diffusers` teacher).
Plain functions, so the test (and a person at a prompt) can build them anywhere."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tiny_models import build_tiny_t5

CATEGORIES = {
    "animals": ["a red fox in the snow", "a sleeping cat on a sofa", "an owl on a branch at night",
                "two horses running on a beach", "a green frog on a lily pad", "a dog catching a frisbee",
                "a whale jumping out of the sea", "a parrot with blue feathers", "a tiger drinking from a river",
                "a herd of elephants at sunset"],
    "food": ["a bowl of tomato soup", "a stack of pancakes with syrup", "a slice of pepperoni pizza",
             "a basket of fresh bread", "a cup of coffee with latte art", "a plate of sushi rolls",
             "a chocolate cake with candles", "a green salad with avocado", "a glass of orange juice",
             "a burger with fries"],
    "places": ["a quiet library with tall shelves", "a busy market in the morning", "a castle on a hill",
               "a small cabin in the woods", "a train station in the rain", "a beach with palm trees",
               "a desert road at noon", "a harbor with fishing boats", "a city street at night",
               "a garden with a stone fountain"],
}


def write_prompt_file(path: Path) -> Path:
    """A .jsonl prompt file (`prompt` and `tag`, not PartiPrompts' layout): 30 prompts, 3 categories."""
    lines = [json.dumps({"prompt": p, "tag": tag, "source": "test"}) for tag, ps in CATEGORIES.items() for p in ps]
    path.write_text("\n".join(lines) + "\n")
    return path


def build_prompt_t5(folder: Path) -> Path:
    """The tiny T5 (tests/tiny_models.py) with a tokenizer trained on the prompts' and the chat
    server's words, so that prompts take few tokens."""
    from evolvedirector.testing.chat_server import SCENES, STYLES

    corpus = [p for ps in CATEGORIES.values() for p in ps] + list(SCENES) + list(STYLES) + \
        ["number scene 0 1 2 3 4 5 6 7 8 9 of a an the"]
    return build_tiny_t5(folder, corpus, vocab_size=300, repeat=5)


def build_tiny_pixart(folder: Path, t5: Path, vae: Path) -> Path:
    """A random PixArtAlphaPipeline (1-layer transformer on the tiny T5 and VAE), saved to `folder`.

    Draw with call_kwargs clean_caption: false (no bs4/ftfy) and use_resolution_binning: false
    (its bins are for 256 px and up)."""
    import torch
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel
    from transformers import AutoTokenizer, T5EncoderModel

    torch.manual_seed(1)
    transformer = PixArtTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=1,
        cross_attention_dim=16, sample_size=16, patch_size=2, caption_channels=24, norm_num_groups=4,
    )
    pipeline = PixArtAlphaPipeline(
        tokenizer=AutoTokenizer.from_pretrained(t5), text_encoder=T5EncoderModel.from_pretrained(t5),
        vae=AutoencoderKL.from_pretrained(vae), transformer=transformer, scheduler=DPMSolverMultistepScheduler(),
    )
    pipeline.save_pretrained(folder)
    return folder


def ledger_rows(db: Path) -> list[dict]:
    """Every row of the ledger, read with a plain connection (safe while a run writes)."""
    if not db.exists():  # connecting would create it
        return []
    conn = sqlite3.connect(db, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute("SELECT * FROM teacher_calls")]
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def run_config(out: Path, prompts: Path, t5: Path, vae: Path, pixart: Path, images_url: str, chat_url: str,
               images_key_env: str, max_rounds: int = 3) -> dict:
    """The run: 2 teachers (the PixArt pipeline, the fake images API), the scripted chat director,
    a latent student with the tiny T5 and VAE; everything as small as the loop allows."""
    return {
        "out": str(out), "seed": 5, "device": "cpu", "threads": 1,
        "world": {"name": "prompts", "prompts": str(prompts), "heldout_share": 0.2, "image_size": 32},
        "teachers": [
            {"name": "pixart", "backend": "diffusers", "model": str(pixart), "steps": 2, "guidance": 1.0,
             "cost_per_image": 0.001, "call_kwargs": {"clean_caption": False, "use_resolution_binning": False}},
            {"name": "api", "backend": "openai", "model": "fake-image", "base_url": f"{images_url}/v1",
             "api_key_env": images_key_env, "cost_per_image": 0.04, "default_size": "32x32", "timeout_s": 20,
             "retry": {"max_attempts": 3, "backoff_s": 0.01, "max_backoff_s": 0.05}},
        ],
        # One request at a time: the server's scripted replies then come in the loop's order.
        "director": {"backend": "openai", "base_url": chat_url, "model": "open-world-director",
                     "structured_output": "none", "retries": 1, "backoff_s": 0.01, "timeout_s": 20,
                     "panel_size": 32, "concurrency": 1},
        "student": {"size": "tiny", "text_encoder": str(t5), "vae": str(vae), "max_tokens": 40,
                    "sample_steps": 2, "ema_decay": 0.9, "guidance": 2.0},
        "train": {"batch_size": 4, "lr": 1e-3, "warmup_steps": 1, "steps_per_round": 2},
        "evolve": {"seed_prompts": 8, "select_ratio": 0.5, "extend_num": 3, "mutation_ratio": 1.0,
                   "render_steps": 2, "expand_with": "best"},
        "budget": {"max_rounds": max_rounds},
    }
