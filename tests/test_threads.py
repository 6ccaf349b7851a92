"""Threads chosen per round: the count changes no number, and the fastest count is chosen."""

import pytest
import torch

from evolvedirector.bench.train import RandomCaptions
from evolvedirector.config import StudentConfig, TrainConfig
from evolvedirector.loop import threads
from evolvedirector.student import Student
from evolvedirector.trainer import Trainer


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def trained_parameters(count: int) -> torch.Tensor:
    torch.set_num_threads(count)
    torch.manual_seed(0)
    student = Student(StudentConfig(size="shapes-xs", ema_decay=0.9), 32, text_encoder=RandomCaptions(16, 384))
    trainer = Trainer(student, TrainConfig(batch_size=16, lr=1e-3, warmup_steps=2), seed=5, device="cpu")
    images = torch.rand(32, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    trainer.train(images, [f"prompt {i}" for i in range(32)], 3)
    return torch.cat([p.detach().flatten() for p in [*student.model.parameters(), *student.ema_model.parameters()]])


def test_one_or_two_threads_train_the_same_numbers():
    # What makes choosing threads per round safe: a run computes the same whatever was chosen.
    assert torch.equal(trained_parameters(1), trained_parameters(2))


def test_the_fastest_count_is_chosen_and_set():
    class Timed:  # a step that is fastest with one thread, as beside a busy program
        def time_step(self, repeats, at_least=0.0):
            return {4: 0.3, 2: 0.25, 1: 0.19}[torch.get_num_threads()]

    assert threads.candidates(4) == [4, 2, 1] and threads.candidates(2) == [2, 1] and threads.candidates(1) == [1]
    chosen, timings = threads.choose_threads(Timed(), 4)
    assert chosen == 1 and torch.get_num_threads() == 1 and timings == {4: 0.3, 2: 0.25, 1: 0.19}
    assert threads.describe(chosen, timings) == "threads: 1 (a training step took 0.190 s, against 0.300 s with 4, 0.250 s with 2)"
