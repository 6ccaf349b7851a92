"""Tiny full-scale parts for the student's tests (tests/tiny_models.py builds them)."""

import pytest
from tiny_models import build_tiny_t5, build_tiny_vae


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory):
    corpus = ["a red circle on the left", "two blue squares", "the letter A in green", "three yellow triangles",
              "a purple square at the top right", "one orange circle below a blue triangle"]
    return build_tiny_t5(tmp_path_factory.mktemp("tiny-t5"), corpus, vocab_size=80, repeat=10)


@pytest.fixture(scope="session")
def tiny_vae(tmp_path_factory):
    return build_tiny_vae(tmp_path_factory.mktemp("tiny-vae"))
