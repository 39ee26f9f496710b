"""Where published weights live on this machine, and fetching them when they are not there yet.

Two caches, the ones the publishers' own tools use, so a cache filled by timm, torchvision or
DeepLabCut on another machine is found here as it is:

- Hugging Face Hub files (timm's ImageNet checkpoints, DeepLabCut's backbones and SuperAnimal
  models): ``hf_hub_download``'s cache, ``$HF_HUB_CACHE`` or ``$HF_HOME/hub`` (default
  ``~/.cache/huggingface/hub``), as ``models--OWNER--NAME/snapshots/REVISION/FILE``.
- Plain URLs (torchvision's detector checkpoints): ``torch.hub``'s checkpoint folder,
  ``$TORCH_HOME/hub/checkpoints/FILE`` (default ``~/.cache/torch/hub/checkpoints``).

The environment is read at each call, not at import. With ``HF_HUB_OFFLINE=1`` nothing is
downloaded (for both caches): a file that is not cached raises ``MissingWeightsError`` with one
line that names the file, where to get it and the folder to put it in.
"""
from __future__ import annotations

import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from dlc_train.models.loading import _first_line

logger = logging.getLogger(__name__)

HF_ENDPOINT = "https://huggingface.co"
HF_FILENAMES_TIMM = ("model.safetensors", "pytorch_model.bin")


class PretrainedWeightsError(ValueError):
    """Published weights cannot be found, read, or loaded into the model (one-line message)."""


class MissingWeightsError(PretrainedWeightsError):
    """A weights file is neither cached nor downloadable (offline, or no network)."""


@dataclass(frozen=True)
class HubFile:
    """A file in a Hugging Face Hub model repository; the first of ``filenames`` found is used.

    Attributes:
        repo_id: "owner/name", e.g. "timm/resnet50.a1_in1k".
        filenames: candidate file names in the repository, in order of preference.
    """

    repo_id: str
    filenames: tuple[str, ...]

    def describe(self) -> str:
        return f"{HF_ENDPOINT}/{self.repo_id} ({' or '.join(self.filenames)})"


@dataclass(frozen=True)
class UrlFile:
    """A file published at a URL (torchvision's checkpoints), cached by ``torch.hub``.

    Attributes:
        url: the download address; its last path part is the cached file name.
    """

    url: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def hash_prefix(self) -> str | None:
        # torchvision names its files NAME-<first hex digits of the SHA-256>.pth
        stem = self.filename.rsplit(".", 1)[0]
        tail = stem.rsplit("-", 1)[-1] if "-" in stem else ""
        return tail if len(tail) >= 6 and all(c in "0123456789abcdef" for c in tail) else None

    def describe(self) -> str:
        return self.url


WeightsFile = HubFile | UrlFile


def offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set to 1/true/yes/on: no download is attempted."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hf_cache_dir() -> Path:
    """``hf_hub_download``'s cache folder, from the environment as it is now."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def torch_hub_checkpoints_dir() -> Path:
    """``torch.hub``'s checkpoint folder (``torch.hub.get_dir()/checkpoints``)."""
    return Path(torch.hub.get_dir()).expanduser() / "checkpoints"


def hf_repo_folder(repo_id: str) -> Path:
    """The cache folder of one Hub model repository."""
    return hf_cache_dir() / ("models--" + repo_id.replace("/", "--"))


def cache_hint(source: WeightsFile) -> str:
    """Where a file belongs in the cache, for the missing-file message."""
    if isinstance(source, UrlFile):
        return str(torch_hub_checkpoints_dir() / source.filename)
    return f"{hf_repo_folder(source.repo_id)} (`hf download {source.repo_id} " \
           f"{source.filenames[0]}` on a machine with network, then copy its Hugging Face " \
           f"cache folder here; see docs/pretrained.md)"


def _missing(source: WeightsFile, reason: str) -> MissingWeightsError:
    return MissingWeightsError(f"pretrained weights not available ({reason}): fetch "
                               f"{source.describe()} into {cache_hint(source)}")


def _hf_errors() -> tuple[type[BaseException], type[BaseException]]:
    """(file absent from the repository, Hub unreachable and file not cached)."""
    try:
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
    except ImportError:  # older huggingface_hub
        from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError
    return EntryNotFoundError, LocalEntryNotFoundError


def fetch(source: WeightsFile) -> Path:
    """The local path of a published weights file: from the cache, else downloaded into it.

    Raises:
        MissingWeightsError: not cached, and offline or the download failed.
    """
    if isinstance(source, UrlFile):
        return _fetch_url(source)
    return _fetch_hub(source)


def _fetch_url(source: UrlFile) -> Path:
    path = torch_hub_checkpoints_dir() / source.filename
    if path.is_file():
        return path
    if offline():
        raise _missing(source, "HF_HUB_OFFLINE is set and it is not cached")
    path.parent.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s to %s", source.url, path)
    try:
        # Writes a temporary file beside ``path`` and moves it in place once the hash matched.
        torch.hub.download_url_to_file(source.url, str(path), hash_prefix=source.hash_prefix,
                                       progress=False)
    except Exception as err:  # URLError, timeouts, hash mismatch: all end the same way
        raise _missing(source, f"download failed: {type(err).__name__}: "
                               f"{_first_line(err)}") from None
    return path


def _fetch_hub(source: HubFile) -> Path:
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cache = hf_cache_dir()
    for name in source.filenames:
        found = try_to_load_from_cache(source.repo_id, name, cache_dir=cache)
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    if offline():
        raise _missing(source, "HF_HUB_OFFLINE is set and it is not cached")
    not_found, unreachable = _hf_errors()
    last: BaseException | None = None
    for name in source.filenames:
        try:
            return Path(hf_hub_download(source.repo_id, name, cache_dir=cache))
        except unreachable as err:  # a subclass of not_found: test it first
            raise _missing(source, f"no connection to the Hub: {type(err).__name__}") from None
        except not_found as err:  # this repository has the weights under another name
            last = err
        except Exception as err:  # repository gone, access refused, ...
            raise _missing(source, f"download failed: {type(err).__name__}: "
                                   f"{_first_line(err)}") from None
    raise _missing(source, f"none of its files exist: {_first_line(last) if last else ''}")


def read_state_dict(path: Path, what: str) -> dict[str, torch.Tensor]:
    """Reads a weights file (safetensors, or a PyTorch file with ``weights_only=True``).

    Returns the object stored in it when that is a dict (a state_dict, or a snapshot dict whose
    ``model`` / ``state_dict`` entry the caller picks).
    """
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path), device="cpu")
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        raise PretrainedWeightsError(f"cannot read {what} at {path} (truncated or corrupt? "
                                     f"delete it to fetch it again): {type(err).__name__}: "
                                     f"{_first_line(err)}") from None
    except Exception as err:  # weights-only unpickler refusals
        raise PretrainedWeightsError(f"cannot read {what} at {path} (not a weights-only "
                                     f"PyTorch file?): {type(err).__name__}: "
                                     f"{_first_line(err)}") from None
    if not isinstance(data, dict):
        raise PretrainedWeightsError(f"{what} at {path} holds a {type(data).__name__}, "
                                     "not a state_dict")
    return data
