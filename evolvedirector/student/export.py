"""Write a trained student as a self-describing diffusers folder.

The folder holds the EMA transformer, the DPM-Solver scheduler the student samples with, the
text encoder and its tokenizer, the VAE when there is one, model_index.json naming
EvolveDirectorPipeline, and pipeline.py, two lines that import that class from the installed
`evolvedirector` package (see evolvedirector/student/pipeline.py for how diffusers loads it).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

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


def export_student(student, out: str | Path) -> Path:
    """Write the folder; it appears complete or not at all (written beside it, then renamed)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not an empty folder; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        student_pipeline(student).save_pretrained(staging)
        index_path = staging / "model_index.json"
        index = json.loads(index_path.read_text())
        # save_pretrained records the class name only; the [module, class] form tells diffusers
        # that the class is defined by the folder's pipeline.py.
        index["_class_name"] = [PIPELINE_MODULE, EvolveDirectorPipeline.__name__]
        index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        (staging / f"{PIPELINE_MODULE}.py").write_text(PIPELINE_FILE)
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out
