"""Issue 25, item 8: a hostile `--inception-weights` file is refused without running anything, in one line
naming the file, never suggesting `weights_only=False`."""

from __future__ import annotations

from pathlib import Path

import torch

from stylegan_transfer.metrics import evaluate
from stylegan_transfer.metrics import weights as metric_weights


class _Payload:
    """Unpickling this would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_hostile_inception_weights_file_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("STYLEGAN_TRANSFER_CACHE", str(tmp_path / "cache"))
    marker = tmp_path / "executed"
    hostile = tmp_path / "pt_inception.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(1), "payload": _Payload(marker)}, hostile)
    real, fake = tmp_path / "real", tmp_path / "fake"
    real.mkdir(), fake.mkdir()
    argv = ["folders", str(real), str(fake), "--inception-weights", str(hostile), "--device", "cpu"]
    assert evaluate.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert str(hostile) in err and "nothing in it was run" in err and "io.open" in err, err
    assert "weights_only" not in err
    assert evaluate.main(["weights", "--import", str(hostile)]) == 2  # the offline import route
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(hostile) in err and "weights_only" not in err, err
    assert not marker.exists()
    assert not (tmp_path / "cache" / metric_weights.FID_CACHE_NAME).exists()
