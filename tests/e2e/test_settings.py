"""Settings that used to train wrongly or hang fail at once from the command line (issue 26, part 3)."""

from __future__ import annotations

import time

from ..conftest import TINY, cli


def test_limit_train_batches_zero_exits_nonzero_at_once_instead_of_hanging(tmp_path):
    """`trainer.limit_train_batches=0` looped forever at step 0 (deaf to SIGTERM); now it is refused before
    anything is built, naming the key, the range and what to do instead."""
    run = tmp_path / "run"
    start = time.monotonic()
    proc = cli("train", *TINY, "trainer.limit_train_batches=0", "trainer.gradient_clip_val=-1",
               f"hydra.run.dir={run}", timeout=120)
    elapsed = time.monotonic() - start
    assert proc.returncode != 0
    assert "trainer.limit_train_batches=0 is out of range; allowed: >= 1 (an int: that many batches; a float in " \
           "(0, 1]: that fraction; null: all). To train less, set trainer.max_steps." in proc.stderr
    assert "trainer.gradient_clip_val=-1 is out of range; allowed: > 0" in proc.stderr
    assert not (run / "checkpoints").exists() and not (run / "provenance.json").exists()
    assert elapsed < 60, f"took {elapsed:.0f} s"
