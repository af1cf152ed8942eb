"""Data-parallel training: a real 2-process gloo run under torchrun, and the per-rank hooks."""

import json
import subprocess
import sys

import torch

from napari_ccdseg.cli import main
from napari_ccdseg.ddp import DataParallel, SingleProcess
from napari_ccdseg.modelfile import load_model


def test_torchrun_two_processes_write_one_loadable_model(tmp_path):
    data, out = tmp_path / "data", tmp_path / "model"
    assert main(["simulate", str(data), "--n", "3", "--size", "64", "64", "--seed", "1"]) == 0
    result = subprocess.run(
        [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "-m", "napari_ccdseg.cli", "train", str(data), "--out", str(out / "m.safetensors"),
            "--distributed", "--epochs", "1", "--steps", "2", "--batch-size", "2", "--tile", "32",
            "--device", "cpu",
        ],
        capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("model: ") == 1  # rank 1 trains silently
    assert sorted(p.name for p in out.iterdir()) == ["m.safetensors", "m_history.csv", "m_history.json"]
    model, meta = load_model(out / "m.safetensors")
    assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 4, 32, 32)
    assert meta["training"]["seed"] == 0  # the run's seed, not a rank's
    history = json.loads((out / "m_history.json").read_text())
    assert len(history) == 1 and history[0]["val_loss"] > 0


def test_distributed_without_torchrun_is_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    assert main(["train", str(tmp_path), "--out", str(tmp_path / "m"), "--distributed"]) == 2
    assert "torchrun" in capsys.readouterr().err


def test_ranks_draw_different_tiles_and_share_validation():
    cpu = torch.device("cpu")
    ranks = [DataParallel(rank, 3, cpu) for rank in range(3)]
    assert len({rank.seed(7) for rank in ranks}) == 3
    assert ranks[0].seed(7) == DataParallel(0, 3, cpu).seed(7)
    shares = [rank.shard(list(range(10))) for rank in ranks]
    assert sorted(sum(shares, [])) == list(range(10))
    single = SingleProcess()
    assert single.seed(7) == 7 and single.shard([1, 2]) == [1, 2] and single.is_writer
    assert [rank.is_writer for rank in ranks] == [True, False, False]
