"""A director that runs a vision-language model in this process with transformers.

Any `AutoModelForImageTextToText` checkpoint whose processor has a chat template works:
LLaVA-NeXT, Qwen2-VL and others. Nothing is downloaded unless `model` names a hub id and the hub
is reachable; a folder loads offline.

Judging reads the next-token distribution instead of generating: a pairwise verdict compares the
probability of the answer tokens "A" and "B", a pointwise score is P("Yes") (VQAScore). That is
the local equivalent of a server's constrained choice, so a verdict can never be unreadable.
Expansion and mutation generate text, which the tolerant parser reads. Concurrent requests are
batched (`batch_size`) and run in a worker thread.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable

from PIL import Image

from evolvedirector.director.batching import MicroBatcher
from evolvedirector.director.vlm import CHOICES, DirectorError, VLMDirector

QWEN2_VL_TYPES = ("qwen2_vl", "qwen2_5_vl")


class LocalVLMDirector(VLMDirector):
    name = "local"

    def __init__(self, config, seed: int = 0, exclude: Collection[str] = ()):
        super().__init__(config, seed=seed, exclude=exclude)
        import torch
        from transformers import AutoModelForImageTextToText
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        self.torch = torch
        if config.device == "cuda" and not torch.cuda.is_available():
            raise DirectorError("director.device: cuda was asked for, but torch sees no GPU")
        self.device = torch.device("cuda" if config.device == "auto" and torch.cuda.is_available() else
                                   "cpu" if config.device == "auto" else config.device)
        dtype = config.dtype if config.dtype != "auto" else "bfloat16" if self.device.type == "cuda" else "float32"
        self.dtype = getattr(torch, dtype)
        try:
            self.processor = load_processor(config.model)
            self.model = AutoModelForImageTextToText.from_pretrained(config.model, dtype=self.dtype)
        except (OSError, ValueError, ImportError) as error:
            raise DirectorError(f"director.model: cannot load {config.model!r} as an image-text-to-text model: "
                                f"{error}") from None
        self.model.to(self.device).eval()
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "left"  # the next token of every row sits in the last column
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.choice_ids = answer_token_ids(self.tokenizer, CHOICES, lowercase=False)
        self.yes_ids, self.no_ids = answer_token_ids(self.tokenizer, ("Yes", "No"), lowercase=True)
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.batcher = MicroBatcher(self._run_batch, config.batch_size)

    def __repr__(self) -> str:
        return f"LocalVLMDirector(model={self.config.model!r}, device={self.device})"

    # ---- the three primitives -------------------------------------------------------------------

    async def _ask_choice(self, text: str, canvas: Image.Image, attempt: int) -> str | None:
        return await self.batcher.submit("choice", (text, canvas))

    async def _ask_yes(self, text: str, image: Image.Image, attempt: int) -> float | None:
        return await self.batcher.submit("yes", (text, image))

    async def _ask_text(self, text: str, schema: dict, attempt: int) -> str:
        return await self.batcher.submit(("text", self.temperature(attempt)), text)

    # ---- batches (run in a worker thread) -------------------------------------------------------

    def _run_batch(self, kind: Hashable, items: list) -> list:
        with self.torch.inference_mode():
            if kind == "choice":
                probs = self._next_token_probs(items)
                p_a, p_b = (probs[:, ids].sum(-1) for ids in self.choice_ids)
                return [None if a == b else "A" if a > b else "B" for a, b in zip(p_a.tolist(), p_b.tolist())]
            if kind == "yes":
                # VQAScore reads P("Yes") over the whole vocabulary, not renormalised against "No".
                return self._next_token_probs(items)[:, self.yes_ids].sum(-1).clamp(0, 1).tolist()
            _, temperature = kind
            return self._generate(items, temperature)

    def _next_token_probs(self, items: list[tuple[str, Image.Image]]):
        prompts = [self._chat(text, with_image=True) for text, _ in items]
        inputs = self._inputs(text=prompts, images=[image for _, image in items])
        logits = self.model(**inputs).logits[:, -1, :]
        return logits.float().softmax(-1)

    def _generate(self, texts: list[str], temperature: float) -> list[str]:
        inputs = self._inputs(text=[self._chat(text, with_image=False) for text in texts])
        sampling = {"do_sample": True, "temperature": temperature, "top_p": 1.0} if temperature > 0 else \
            {"do_sample": False}
        # Sampling draws from torch's global generator: seed it from ours for repeatable retries,
        # inside fork_rng so that the student's training randomness is left as it was.
        seed = int(self.torch.randint(0, 2**31 - 1, (1,), generator=self.generator))
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        with self.torch.random.fork_rng(devices=cuda):
            self.torch.manual_seed(seed)
            output = self.model.generate(
                **inputs, max_new_tokens=self.config.max_tokens, pad_token_id=self.tokenizer.pad_token_id, **sampling
            )
        return self.tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    def _chat(self, text: str, with_image: bool) -> str:
        content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": text}]
        return self.processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )

    def _inputs(self, text: list[str], images: list[Image.Image] | None = None) -> dict:
        batch = self.processor(text=text, images=images, padding=True, return_tensors="pt")
        # Segment ids come from BERT-style tokenizers only, and decoder models refuse them.
        return {
            key: value.to(self.device, self.dtype) if value.is_floating_point() else value.to(self.device)
            for key, value in batch.items() if key != "token_type_ids"
        }


def answer_token_ids(tokenizer, answers: tuple[str, ...], lowercase: bool) -> list[list[int]]:
    """For each answer, the ids of the first token of its spellings ("A", " A", and lower case if
    asked). An id that starts two answers (a bare space piece, say) says nothing and is dropped."""
    found = []
    for answer in answers:
        spellings = [answer, " " + answer] + ([answer.lower(), " " + answer.lower()] if lowercase else [])
        ids = {ids[0] for s in spellings if (ids := tokenizer.encode(s, add_special_tokens=False))}
        found.append(ids)
    shared = {i for k, ids in enumerate(found) for other in found[k + 1:] for i in ids & other}
    result = [sorted(ids - shared) for ids in found]
    if not all(result):
        raise DirectorError(f"the tokenizer cannot tell the answers {answers} apart by their first token")
    return result


def load_processor(model: str):
    """The model's processor. Qwen2-VL's also builds a video processor, which needs torchvision;
    when that fails, an images-only processor is built instead."""
    from transformers import AutoConfig, AutoProcessor

    qwen2_vl = AutoConfig.from_pretrained(model).model_type in QWEN2_VL_TYPES
    try:
        processor = AutoProcessor.from_pretrained(model)
    except (OSError, ImportError, ValueError, TypeError, AttributeError):
        if not qwen2_vl:
            raise
        processor = images_only_qwen2_vl_processor().from_pretrained(model)
    if getattr(processor, "image_processor", None) is None:  # AutoProcessor fell back to a bare tokenizer
        if not qwen2_vl:
            raise ValueError("its processor has no image processor")
        processor = images_only_qwen2_vl_processor().from_pretrained(model)
    return processor


def images_only_qwen2_vl_processor() -> type:
    """Qwen2VLProcessor without its video processor (processor attributes come from __init__'s
    parameters, so leaving `video_processor` out of the signature leaves it out everywhere)."""
    from transformers import Qwen2VLProcessor

    class ImagesOnlyQwen2VLProcessor(Qwen2VLProcessor):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    return ImagesOnlyQwen2VLProcessor
