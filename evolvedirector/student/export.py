"""Write a trained student as a self-describing diffusers folder.

The folder holds the EMA transformer, the DPM-Solver scheduler the student samples with, the
text encoder and its tokenizer, the VAE when there is one, model_index.json naming
EvolveDirectorPipeline, pipeline.py, two lines that import that class from the installed
`evolvedirector` package (see evolvedirector/student/pipeline.py for how diffusers loads it), and
README.md, the model card (evolvedirector/publish/cards.py) when one is given.
"""

from __future__ import annotations

import json
from pathlib import Path

from evolvedirector.store.folders import staged_folder
from evolvedirector.student.diffusion import sampling_scheduler
from evolvedirector.student.pipeline import PIPELINE_MODULE, EvolveDirectorPipeline

PIPELINE_FILE = f'''"""An EvolveDirector student. The pipeline class lives in the `evolvedirector` package:
`pip install evolvedirector`, then DiffusionPipeline.from_pretrained(this_folder, trust_remote_code=True)."""
from evolvedirector.student.pipeline import {EvolveDirectorPipeline.__name__}  # noqa: F401
'''


def student_pipeline(student) -> EvolveDirectorPipeline:
    """The student's EMA weights as a pipeline (sharing its modules, not copying them)."""
    return EvolveDirectorPipeline(
        tokenizer=student.text.tokenizer, text_encoder=student.text.model, transformer=student.ema_model,
        scheduler=sampling_scheduler(student.noise), vae=getattr(student.space, "vae", None),
        max_sequence_length=student.text.max_tokens, image_size=student.image_size,
        guidance_scale=student.config.guidance, num_inference_steps=student.config.sample_steps,
    )


def export_student(student, out: str | Path, card: str | None = None) -> Path:
    """Write the folder, with `card` as its README.md; it appears complete or not at all."""
    out = Path(out)
    with staged_folder(out) as staging:
        student_pipeline(student).save_pretrained(staging)
        index_path = staging / "model_index.json"
        index = json.loads(index_path.read_text())
        # save_pretrained records the class name only; the [module, class] form tells diffusers
        # that the class is defined by the folder's pipeline.py.
        index["_class_name"] = [PIPELINE_MODULE, EvolveDirectorPipeline.__name__]
        index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        (staging / f"{PIPELINE_MODULE}.py").write_text(PIPELINE_FILE)
        if card is not None:
            (staging / "README.md").write_text(card)
    return out
