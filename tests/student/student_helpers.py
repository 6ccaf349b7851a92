"""Helpers shared by the student tests (a module of its own: `conftest` is a name several test folders use)."""

import torch


def randomised(model, seed=1):
    """PixArt's zero initialisation of the output layers would hide every difference."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
    return model


def assert_saved_loaded_and_exported_alike(student, tmp_path, config_field, prompts):
    """The student's weights survive save and load (with `config_field` set in the saved config),
    and its export draws what the student draws."""
    import numpy as np

    from evolvedirector.student.export import export_student
    from evolvedirector.student.pipeline import load_export
    from evolvedirector.student.transformer import QKNormPixArtTransformer2DModel

    student.save_weights(tmp_path / "weights")
    loaded = QKNormPixArtTransformer2DModel.from_pretrained(tmp_path / "weights" / "transformer_ema")
    assert loaded.config[config_field]
    for (name, a), b in zip(student.ema_model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    expected = student.generate(prompts, seed=3, steps=4)
    pipe = load_export(export_student(student, tmp_path / "export"))
    drawn = pipe(prompts, num_inference_steps=4, generator=torch.Generator().manual_seed(3), output_type="np").images
    for a, b in zip(expected, drawn):
        np.testing.assert_array_equal(a, b)
