"""A local weights cache laid out exactly as ``hf_hub_download`` and ``torch.hub`` lay theirs,
for testing the pretrained-weights code offline."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def weights_cache(tmp_path, monkeypatch) -> "WeightsCache":
    """Empty HF and torch.hub caches under tmp_path, selected through the environment, offline."""
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return WeightsCache(tmp_path / "hf" / "hub", tmp_path / "torch" / "hub" / "checkpoints")


class WeightsCache:
    def __init__(self, hub: Path, checkpoints: Path):
        self.hub = hub
        self.checkpoints = checkpoints

    def hub_path(self, repo_id: str, filename: str) -> Path:
        """``models--OWNER--NAME/snapshots/REVISION/FILE``, with ``refs/main`` -> REVISION."""
        repo = self.hub / ("models--" + repo_id.replace("/", "--"))
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(REVISION)
        path = repo / "snapshots" / REVISION / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def put_hub(self, repo_id: str, filename: str, obj) -> Path:
        """Writes ``obj`` (a state_dict or snapshot dict) as a Hub file (safetensors by suffix)."""
        path = self.hub_path(repo_id, filename)
        if filename.endswith(".safetensors"):
            from safetensors.torch import save_file
            save_file({k: v.contiguous() for k, v in obj.items()}, str(path))
        else:
            torch.save(obj, path)
        return path

    def put_url(self, url: str, state: dict) -> Path:
        """Writes a state_dict where ``torch.hub`` caches the file of ``url``."""
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        path = self.checkpoints / url.rsplit("/", 1)[-1]
        torch.save(state, path)
        return path


def randomized(state: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """The same keys and shapes with new random values (integer buffers kept)."""
    gen = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(v.shape, generator=gen, dtype=torch.float32).to(v.dtype)
                if v.is_floating_point() else v.clone()) for k, v in state.items()}
