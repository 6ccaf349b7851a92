"""A local diffusers pipeline as a teacher, sharded over devices.

One copy of the pipeline is loaded per listed device (`devices: [cuda:0, cuda:1]`); each call
takes a free copy, draws one image in a worker thread (so the event loop keeps serving the other
calls), and gives the copy back. The teacher's concurrency is the number of copies, so the
ledger never queues more calls than there are devices to run them.

Images are deterministic per (prompt, seed): each call seeds its own generator on its device.
A pipeline with a safety checker that flags an image is a `refused` call; an exception in the
pipeline is a `pipeline_error`. Neither is retried or billed (local compute is the only cost, and
`cost_per_image` is what the ledger charges for a finished image).
"""

from __future__ import annotations

import asyncio
import queue

import numpy as np

from evolvedirector.teachers.aspect import scale_to_area
from evolvedirector.teachers.base import CallContext, ImageRequest, ImageResult, Teacher, idempotency_key
from evolvedirector.teachers.faults import PIPELINE_ERROR, REFUSED, Fault
from evolvedirector.teachers.image_bytes import fit_to_request, parse_size


class DiffusersTeacher(Teacher):
    def __init__(self, config):
        import torch  # heavy: only when a diffusers teacher is configured
        from diffusers import DiffusionPipeline

        self.name = config.name
        self.cost_per_image = config.cost_per_image
        self.concurrency = len(config.devices)
        self.steps = config.steps
        self.guidance = config.guidance
        self.sizes = {side: parse_size(text) for side, text in config.sizes.items()}
        self.default_size = None if config.default_size is None else parse_size(config.default_size)
        self.call_kwargs = dict(config.call_kwargs)
        self.devices = list(config.devices)
        self.calls_per_copy = [0] * len(self.devices)  # how the calls spread over the copies
        # A thread-safe pool of copies: a thread takes one, uses it alone, puts it back.
        self._free: queue.Queue = queue.Queue()
        # float32 is the loader's default; other dtypes are asked for (the keyword every version knows).
        load = {} if config.dtype == "float32" else {"torch_dtype": getattr(torch, config.dtype)}
        for index, device in enumerate(self.devices):
            pipeline = DiffusionPipeline.from_pretrained(config.model, **load).to(device)
            pipeline.set_progress_bar_config(disable=True)
            self._free.put((index, pipeline))

    def draw_size(self, side: int) -> tuple[int, int]:
        """(width, height) the pipeline draws at for a requested side."""
        return self.sizes.get(side) or self.default_size or (side, side)

    def request_size(self, request: ImageRequest) -> tuple[int, int]:
        """(width, height) the pipeline draws at for a request: for a bucket, its aspect at the
        area the pipeline draws the side at (the resolution it was configured for), on the 64 grid."""
        width, height = self.draw_size(request.size)
        if request.bucket is None:
            return width, height
        return scale_to_area(request.bucket, width * height)

    def _render(self, request: ImageRequest) -> np.ndarray:
        """Blocking: one image on whichever device is free (runs in a worker thread)."""
        import torch

        index, pipeline = self._free.get()
        device = self.devices[index]
        try:
            self.calls_per_copy[index] += 1
            width, height = self.request_size(request)
            kwargs = dict(self.call_kwargs)
            if self.guidance is not None:
                kwargs["guidance_scale"] = self.guidance
            generator = torch.Generator(device=device).manual_seed(request.seed)
            with torch.inference_mode():
                output = pipeline(prompt=request.prompt, num_inference_steps=self.steps, width=width, height=height,
                                  generator=generator, output_type="np", **kwargs)
        finally:
            self._free.put((index, pipeline))
        flagged = getattr(output, "nsfw_content_detected", None)
        if flagged and any(flagged):
            raise Fault(REFUSED, "the pipeline's safety checker flagged the image")
        image = np.asarray(output.images[0], dtype=np.float32)
        if not np.isfinite(image).all():
            raise Fault(PIPELINE_ERROR, "the pipeline drew non-finite pixels")
        return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)

    async def call(self, request: ImageRequest, context: CallContext) -> ImageResult:
        try:
            try:
                image = await asyncio.to_thread(self._render, request)
            except Fault:
                raise
            except Exception as error:  # out of memory, a bad argument: recorded, the loop goes on
                raise Fault(PIPELINE_ERROR, f"{type(error).__name__}: {error}"[:300]) from None
        except Fault as fault:
            context.on_fault(fault.kind)
            return ImageResult(request, error=str(fault), kind=fault.kind)
        return ImageResult(request, image=fit_to_request(image, request))

    async def generate(self, requests: list[ImageRequest]) -> list[ImageResult]:
        return list(await asyncio.gather(*(
            self.call(r, CallContext(idempotency_key(self.name, r))) for r in requests
        )))
