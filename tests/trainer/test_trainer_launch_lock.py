"""One standalone trainer (`python -m evolvedirector.launch`) per checkpoint folder."""

import pytest


def test_a_second_standalone_trainer_on_one_checkpoint_folder_is_refused(tmp_path):
    from evolvedirector.loop.run_lock import RunLock
    from evolvedirector.launch import main as launch
    from tests.trainer.helpers import make_run

    run = make_run(tmp_path / "run")
    with RunLock(run / "trainer", command="the first trainer"):
        with pytest.raises(SystemExit, match=r"run/trainer is in use by pid \d+ .*the first trainer"):
            launch([str(run), "--steps", "2", "--chunk", "2"])
        assert not (run / "trainer" / "latest").exists()
    launch([str(run), "--steps", "2", "--chunk", "2"])  # free again: it trains and checkpoints
    assert (run / "trainer" / "latest").is_file()
