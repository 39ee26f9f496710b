"""Training on two processes as torchrun starts them (gloo on the CPU): the same weights on
both ranks, losses averaged over ranks, files and output from rank 0 only, the process group
ended. The worker runs the real ``train_network``; it only watches the runner's ``fit`` and
``train_epoch`` to record what each rank held."""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import torch
import torch._dynamo  # noqa: F401  (optimizers import it lazily: once here, not in each worker)
import torch.multiprocessing as mp

from dlc_train.apis import train_network
from dlc_train.runners.train import PoseTrainingRunner
from dlc_train.synthetic import SyntheticSpec, generate_project

FAST = {"data": {"train": {"affine": None, "crop_sampling": None, "motion_blur": False,
                           "gaussian_noise": None}},
        "runner": {"eval_interval": 1, "snapshots": {"save_epochs": 1}},
        "train_settings": {"batch_size": 1, "seed": 5}}


def _project(root: Path) -> Path:
    spec = SyntheticSpec(seed=0, width=64, height=48, num_labeled_frames=4, num_video_frames=1,
                         body_length=0.3, net_type="resnet_tiny")
    return generate_project(root, spec).config_path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, config: str, out: str) -> None:
    """One torchrun-like process: its environment, then train_network as `dlc train` calls it."""
    import torch.distributed as dist

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    seen: dict = {"losses": []}
    fit, train_epoch = PoseTrainingRunner.fit, PoseTrainingRunner.train_epoch

    def watched_fit(self, *args, **kwargs):
        seen["init"] = {k: v.clone() for k, v in self.model.state_dict().items()}
        seen["batches"] = None
        fit(self, *args, **kwargs)
        seen["final"] = self.model.state_dict()

    def watched_epoch(self, loader, *args, **kwargs):
        seen["batches"] = len(loader)
        losses = train_epoch(self, loader, *args, **kwargs)
        seen["losses"].append(losses)
        return losses

    PoseTrainingRunner.fit, PoseTrainingRunner.train_epoch = watched_fit, watched_epoch
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        train_network(config, epochs=1, device="cpu", pytorch_config_overrides=FAST,
                      progress=True)
    seen["printed"] = printed.getvalue()
    seen["group_ended"] = not dist.is_initialized()
    torch.save(seen, Path(out) / f"rank{rank}.pt")


def test_two_processes_train_the_same_weights(tmp_path, one_thread):
    config = _project(tmp_path / "proj")
    # fork: the workers start with this process's imports (spawn re-imports torch and dlc_train
    # in each, about 8 s on 2 cores); each then sets its own environment as torchrun would.
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    mp.start_processes(_worker, args=(2, _free_port(), str(config), str(tmp_path)), nprocs=2,
                       join=True, start_method=method)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]

    # 3 training images over 2 ranks, batch 1: two steps on each rank.
    assert [r["batches"] for r in ranks] == [2, 2]
    final0, final1 = ranks[0]["final"], ranks[1]["final"]
    assert all(torch.equal(final0[k], final1[k]) for k in final0)
    assert any(not torch.equal(ranks[0]["init"][k], final0[k]) for k in final0)
    # Each rank's mean over its own batches differs; the logged one is over both ranks'.
    assert ranks[0]["losses"] == ranks[1]["losses"]
    assert all(r["group_ended"] for r in ranks)

    folder = config.parent / "dlc-models-pytorch/iteration-0/syntheticJan1-trainset95shuffle1/train"
    snapshot = torch.load(folder / "snapshot-001.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in snapshot["model"])
    assert all(torch.equal(snapshot["model"][k], final0[k]) for k in final0)
    rows = (folder / "learning_stats.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("1,")
    assert "epoch 1/1: loss" in ranks[0]["printed"]
    assert "epoch" not in ranks[1]["printed"] and "%" not in ranks[1]["printed"]


def test_a_device_that_cannot_work_under_torchrun_is_one_error_line(monkeypatch):
    from dlc_train.config import ConfigError
    from dlc_train.runners import distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(ConfigError, match=r"device 'cuda:1' under torchrun \(2 processes\)"):
        distributed.setup("cuda:1")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available: pass device 'cpu'"):
            distributed.setup("cuda")
    monkeypatch.setenv("WORLD_SIZE", "1")
    ctx, device = distributed.setup("cpu")
    assert not ctx.enabled and ctx.is_main and device == torch.device("cpu")


@pytest.mark.slow
def test_torchrun_runs_dlc_train(tmp_path):
    """The documented command: torchrun --nproc_per_node 2 -m dlc_cli.main train CONFIG."""
    config = _project(tmp_path / "proj")
    torchrun = shutil.which("torchrun") or pytest.skip("torchrun is not on PATH")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "-m", "dlc_cli.main", "train", str(config),
         "--epochs", "2", "--device", "cpu", "--batch-size", "1", "--no-progress",
         "--set", "data.train.crop_sampling=null", "--set", "data.train.affine=null"],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    folder = config.parent / "dlc-models-pytorch/iteration-0/syntheticJan1-trainset95shuffle1/train"
    assert (folder / "snapshot-002.pt").is_file()
    rows = (folder / "learning_stats.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["step", "1", "2"]
    assert res.stdout.count("snapshots in ") == 1  # rank 0 only
