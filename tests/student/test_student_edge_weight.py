"""student.edge_weight: the squared error on both sides of the clean image's edges weighs more."""

import pytest
import torch

from evolvedirector.config import ConfigError, StudentConfig, parse_config
from evolvedirector.student import Student
from evolvedirector.student.student import edge_weights


def square_image() -> torch.Tensor:
    """(1, 3, 8, 8) in [-1, 1]: white, with a red 2x2 square at rows 3-4, columns 3-4."""
    image = torch.ones(1, 3, 8, 8)
    image[:, 1:, 3:5, 3:5] = -0.7
    return image


def test_both_sides_of_an_edge_weigh_more_and_every_image_averages_one():
    image = square_image()
    weights = edge_weights(image, 4.0)
    assert weights.shape == (1, 1, 8, 8)
    assert torch.isclose(weights.mean(), torch.tensor(1.0))
    edge = weights[0, 0] > weights.min()
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[3:5, 2:6] = True  # the square and its left and right neighbours
    expected[2:6, 3:5] = True  # ... and those above and below
    assert torch.equal(edge, expected)
    assert torch.isclose(weights.max() / weights.min(), torch.tensor(5.0))
    flat = edge_weights(torch.ones(2, 3, 8, 8), 4.0)
    assert torch.equal(flat, torch.ones(2, 1, 8, 8))


@pytest.mark.parametrize("edge_weight", [None, 4.0])
def test_the_loss_counts_an_error_on_an_edge_more_than_one_in_the_background(edge_weight):
    student = Student(StudentConfig(size="tiny", prediction_type="sample", edge_weight=edge_weight), 8)
    image = square_image()

    def loss_with_error_at(row: int, col: int) -> float:
        prediction = image.clone()
        prediction[0, 0, row, col] += 0.5
        student.denoise = lambda *_: prediction  # the clean image is x0 prediction's target
        return student.loss(student.model, image, ["a red square"], torch.Generator().manual_seed(0), 0.0).item()

    on_edge, in_background = loss_with_error_at(3, 2), loss_with_error_at(0, 0)
    if edge_weight is None:
        assert on_edge == pytest.approx(in_background)
    else:
        assert on_edge == pytest.approx(5 * in_background)


def test_edge_weight_needs_the_pixel_space():
    with pytest.raises(ConfigError, match="edge_weight"):
        parse_config({"student": {"edge_weight": 1.0, "vae": "some/vae"}}, "test")
