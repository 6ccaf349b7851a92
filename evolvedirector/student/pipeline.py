"""The student as a diffusers pipeline: what `evolvedirector export` writes and `from_pretrained` loads.

One pipeline for both worlds: pixel space with MiniLM features (no VAE) and latent space with T5
features and the SD VAE. It samples exactly as `Student.generate` does (same text features, noise,
DPM-Solver steps, guidance and decoding), so an export draws the images the run drew.

An exported folder names this class in model_index.json as ["pipeline", "EvolveDirectorPipeline"],
and ships a two-line pipeline.py that imports it from the installed `evolvedirector` package:

    DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)

diffusers runs a folder's own .py only with trust_remote_code=True, and resolves a component
class outside diffusers/transformers (here the QK-norm transformer) only from a module that is
already imported; the pipeline.py import does that. `load_export` reads the same folder without
running any file from it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import DiffusionPipeline, DPMSolverMultistepScheduler
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from PIL import Image

from evolvedirector.student.diffusion import denoise, sample
from evolvedirector.student.student import to_pixels
from evolvedirector.student.text_encoder import TextEncoder
from evolvedirector.student.transformer import QKNormPixArtTransformer2DModel

PIPELINE_MODULE = "pipeline"  # the file name (without .py) written beside model_index.json


class EvolveDirectorPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "text_encoder->transformer->vae"
    _optional_components = ["vae"]

    def __init__(self, tokenizer, text_encoder, transformer, scheduler, vae=None,
                 max_sequence_length: int = 120, image_size: int = 1024, guidance_scale: float = 4.5,
                 num_inference_steps: int = 20):
        super().__init__()
        self.register_modules(tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer,
                              scheduler=scheduler, vae=vae)
        self.register_to_config(max_sequence_length=max_sequence_length, image_size=image_size,
                                guidance_scale=guidance_scale, num_inference_steps=num_inference_steps)
        self._text: TextEncoder | None = None

    @property
    def pixels_per_cell(self) -> int:
        return 1 if self.vae is None else 2 ** (len(self.vae.config.block_out_channels) - 1)

    def text(self) -> TextEncoder:
        if self._text is None:
            self._text = TextEncoder.from_components(self.tokenizer, self.text_encoder, self.config.max_sequence_length)
        return self._text

    @torch.no_grad()
    def __call__(self, prompt: str | list[str], num_inference_steps: int | None = None,
                 guidance_scale: float | None = None, height: int | None = None, width: int | None = None,
                 generator: torch.Generator | None = None, negative_prompt: str = "", output_type: str = "pil",
                 return_dict: bool = True):
        """Images for prompt(s): output_type "pil" (PIL images), "np" (uint8 arrays) or "pt" ([-1, 1] tensors)."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        steps = num_inference_steps or self.config.num_inference_steps
        guidance = self.config.guidance_scale if guidance_scale is None else guidance_scale
        height, width = height or self.config.image_size, width or self.config.image_size
        cell = self.pixels_per_cell
        multiple = cell * self.transformer.config.patch_size
        if height % multiple or width % multiple:
            raise ValueError(f"height and width must be multiples of {multiple}, got {height}x{width}")
        if generator is None:  # like diffusers: unseeded calls follow torch's global random state
            generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ()).item()))
        # The transformer's device, not the pipeline's first module's: a text encoder may stay on
        # the CPU (offloaded) while the transformer runs on a GPU.
        device = self.transformer.device
        text = self.text()
        cond = tuple(t.to(device) for t in text.encode(prompts))
        uncond = tuple(t.to(device).expand_as(c) for t, c in zip(text.encode([negative_prompt]), cond))
        shape = (len(prompts), self.transformer.config.in_channels, height // cell, width // cell)
        size_conditioning = bool(self.transformer.use_additional_conditions)
        pooled = bool(self.transformer.config.get("pooled_caption", False))
        x = sample(
            lambda x, t, s, m: denoise(self.transformer, x, t, s, m, size_conditioning=size_conditioning,
                                       pixels_per_cell=cell, pooled_caption=pooled),
            self.scheduler, cond, uncond, shape, steps, guidance, generator,
        )
        if self.vae is not None:
            x = self.vae.decode((x / self.vae.config.scaling_factor).to(self.vae.device, self.vae.dtype)).sample.float()
        if output_type == "pt":
            images = x.clamp(-1, 1)
        else:
            arrays = to_pixels(x)
            images = arrays if output_type == "np" else [Image.fromarray(a) for a in arrays]
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)


def load_export(folder: str | Path) -> EvolveDirectorPipeline:
    """An exported pipeline read component by component, running no code from the folder."""
    folder = Path(folder)
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise FileNotFoundError(f"{folder} is not an exported student (no model_index.json)")
    index = json.loads(index_path.read_text())
    if index.get("_class_name") != [PIPELINE_MODULE, EvolveDirectorPipeline.__name__]:
        raise ValueError(f"{index_path} names {index.get('_class_name')!r}, not an EvolveDirector export")
    from transformers import AutoTokenizer

    from evolvedirector.student.text_encoder import load_encoder

    vae = None
    if index.get("vae", [None])[0] is not None:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(folder / "vae").eval()
    settings = {k: index[k] for k in ("max_sequence_length", "image_size", "guidance_scale", "num_inference_steps")
                if k in index}
    return EvolveDirectorPipeline(
        tokenizer=AutoTokenizer.from_pretrained(str(folder / "tokenizer")),
        text_encoder=load_encoder(str(folder / "text_encoder")),
        transformer=QKNormPixArtTransformer2DModel.from_pretrained(folder / "transformer").eval(),
        scheduler=DPMSolverMultistepScheduler.from_pretrained(folder / "scheduler"),
        vae=vae, **settings,
    )
