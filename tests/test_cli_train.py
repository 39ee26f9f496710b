"""`dlc train` refuses what would silently waste or corrupt a user's work, and says what it does.

Each refusal is checked through the CLI: exit code, the one `Error: ` line, and the files after
(nothing written, or the earlier files unchanged). Projects are tiny synthetic ones (4 frames of
64x48, resnet_tiny, no augmentation), so a training run takes about a second.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers.cli import invoke, one_error_line
from conftest import OPENFIELD, require
from dlc_train.synthetic import BODYPARTS, SyntheticSpec, generate_project

ROOT = Path(__file__).resolve().parents[1]
# No augmentation (the default 448-pixel crop would pad each 64x48 frame to 448x448), every epoch
# evaluated and saved.
FAST = ["--device", "cpu", "--batch-size", "2", "--set", "data.train.crop_sampling=null",
        "--set", "data.train.affine=null", "--set", "runner.eval_interval=1",
        "--set", "runner.snapshots.save_epochs=1"]


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (to show that a refused run changed nothing)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _edit_config(config: Path, **changes) -> None:
    cfg = yaml.safe_load(config.read_text())
    cfg.update(changes)
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))


@pytest.fixture
def project(tmp_path) -> Path:
    """A single-animal synthetic project (4 labeled 64x48 frames; 3 train, 1 test); its config."""
    spec = SyntheticSpec(seed=0, width=64, height=48, num_labeled_frames=4, num_video_frames=1,
                         body_length=0.3, net_type="resnet_tiny")
    return generate_project(tmp_path, spec).config_path


def _train_folder(config: Path) -> Path:
    return (config.parent / "dlc-models-pytorch" / "iteration-0"
            / "syntheticJan1-trainset95shuffle1" / "train")


# -- 1. bodyparts of config.yaml vs the labels ------------------------------------------------

def test_renamed_bodypart_is_refused(project):
    renamed = ["snout", "leftear", "rightear", "tail_base", "tailtip"]
    _edit_config(project, bodyparts=renamed)
    before = _tree(project.parent)
    line = one_error_line(invoke(["train", project, "--epochs", "1", *FAST]),
                                  "labeled-data/synthmouse/CollectedData_synth.h5")
    assert line == (
        "Error: config.yaml bodyparts [snout, leftear, rightear, tail_base, tailtip] do not "
        "match the labels in labeled-data/synthmouse/CollectedData_synth.h5: [snout, leftear, "
        "rightear, tailbase, tailtip] (missing from the labels: tail_base; labelled but not in "
        "config.yaml: tailbase)")
    assert _tree(project.parent) == before  # no split, no pytorch_config.yaml, no snapshot


def test_reordered_bodyparts_still_train(project):
    """Columns are looked up by name: the same names in another order are not a mismatch."""
    _edit_config(project, bodyparts=list(reversed(BODYPARTS)))
    res = invoke(["train", project, "--epochs", "1", "--no-progress", *FAST])
    assert res.exit_code == 0, res.output
    assert (_train_folder(project) / "snapshot-001.pt").is_file()


def test_multi_animal_bodyparts_are_compared_per_kind(tmp_path):
    spec = SyntheticSpec(seed=1, width=192, height=160, num_labeled_frames=2, num_video_frames=1,
                         num_animals=2, body_length=0.2, net_type="resnet_tiny")
    config = generate_project(tmp_path, spec).config_path
    before = _tree(config.parent)

    _edit_config(config, multianimalbodyparts=["snout", "leftear", "rightear", "tailbase"])
    one_error_line(
        invoke(["train", config, "--epochs", "1"]),
        "config.yaml multianimalbodyparts [snout, leftear, rightear, tailbase] do not match the "
        "labels of individual mouse1 in labeled-data/synthmouse/CollectedData_synth.h5: [snout, "
        "leftear, rightear, tailbase, tailtip] (labelled but not in config.yaml: tailtip)")

    # Unique bodyparts are those of the individual "single", which these labels do not have.
    _edit_config(config, multianimalbodyparts=list(BODYPARTS), uniquebodyparts=["corner"])
    one_error_line(
        invoke(["train", config, "--epochs", "1"]),
        "config.yaml uniquebodyparts [corner] do not match the labels of individual single in "
        "labeled-data/synthmouse/CollectedData_synth.h5: [] (missing from the labels: corner)")
    after = _tree(config.parent)
    assert after.pop("config.yaml") != before.pop("config.yaml")  # our edits only
    assert after == before


def test_renamed_bodypart_in_real_openfield_project(tmp_path):
    """The reported case: the openfield project with one bodypart renamed in config.yaml."""
    dest = tmp_path / "openfield"
    shutil.copytree(require(OPENFIELD), dest, ignore=shutil.ignore_patterns("videos"))
    config = dest / "config.yaml"
    config.write_text(config.read_text().replace("- tailbase\n", "- tail\n"))
    one_error_line(invoke(["train", config, "--epochs", "1"]),
                           "(missing from the labels: tail; labelled but not in config.yaml: "
                           "tailbase)")
    assert not (dest / "dlc-models-pytorch").exists()


# -- 2. --set keys ------------------------------------------------------------------------------

def test_unknown_set_key_is_refused_before_anything_is_written(project):
    before = _tree(project.parent)
    res = invoke(["train", project, "--epochs", "1", *FAST, "--set", "runner.eval_intervl=3"])
    line = one_error_line(res, "runner.eval_intervl")
    assert line == ("Error: --set runner.eval_intervl: no such key in pytorch_config.yaml; "
                    "did you mean runner.eval_interval?")
    assert not _train_folder(project).exists()
    # Only the shuffle's split may be new (DLCLoader writes it on reading the project).
    added = set(_tree(project.parent)) - set(before)
    assert all(p.startswith("training-datasets/") for p in added), added

    # With a pytorch_config.yaml on disk: it stays as it was, key for key and byte for byte.
    res = invoke(["train", project, "--epochs", "1", "--no-progress", *FAST])
    assert res.exit_code == 0, res.output
    pose_config = _train_folder(project) / "pytorch_config.yaml"
    written = pose_config.read_bytes()
    res = invoke(["train", project, "--epochs", "1", "--set", "train_settings.batchsize=4"])
    one_error_line(res, "did you mean train_settings.batch_size?")
    res = invoke(["train", project, "--epochs", "1", "--set", "model.backbone.no_such=1"])
    one_error_line(res, "--set model.backbone.no_such: no such key")
    assert pose_config.read_bytes() == written


def test_set_accepts_optional_and_free_form_keys(project):
    """Keys the trainer reads that DeepLabCut's configs omit, and optimizer params, are fine."""
    res = invoke(["train", project, "--epochs", "1", "--no-progress", *FAST,
                   "--set", "runner.grad_clip_norm=5.0",
                   "--set", "runner.optimizer.params.weight_decay=0.01",
                   "--set", "data.train.hflip={symmetries: [[leftear, rightear]], p: 0.5}"])
    assert res.exit_code == 0, res.output
    cfg = yaml.safe_load((_train_folder(project) / "pytorch_config.yaml").read_text())
    assert cfg["runner"]["grad_clip_norm"] == 5.0
    assert cfg["runner"]["optimizer"]["params"] == {"lr": 0.0005, "weight_decay": 0.01}
    assert cfg["data"]["train"]["hflip"]["symmetries"] == [["leftear", "rightear"]]


def test_demo_and_runner_overrides_stay_accepted():
    from dlc_cli.demo import demo_training_overrides
    from dlc_train.config import ConfigError, make_pytorch_pose_config
    from dlc_train.config.overrides import UnknownConfigKeyError, check_override_keys

    project = {"bodyparts": list(BODYPARTS), "multianimalproject": False}
    cfg = make_pytorch_pose_config(project, "pytorch_config.yaml", "resnet_tiny")
    check_override_keys(cfg, demo_training_overrides(60))
    # Nested mappings are checked key by key, as update_config merges them.
    with pytest.raises(UnknownConfigKeyError, match=r"runner\.snapshots\.max_snapshot\b"):
        check_override_keys(cfg, {"runner": {"snapshots": {"max_snapshot": 1}}})
    with pytest.raises(UnknownConfigKeyError, match=r"data\.train\.affine\.rotate\b"):
        check_override_keys(cfg, {"data.train.affine": {"rotate": 10}})
    # update_config would write "snapshots.max_snapshots" as one literal key.
    with pytest.raises(ConfigError, match="top level only"):
        check_override_keys(cfg, {"runner": {"snapshots.max_snapshots": 1}})


# Keys read with .get() from something that is not the pytorch_config (snapshot dicts) or from a
# free-form mapping, with why.
_NOT_CONFIG_KEYS = {
    "epoch": "snapshot metadata",
    "metadata": "snapshot dict",
    "scaler": "snapshot dict (float16 runs' GradScaler state)",
    "net_type": "always written (read to compare with --net-type)",
    "milestones": "scheduler params (free-form)",
    "total_loss": "the model's loss dict",
}


@pytest.mark.parametrize("source", ["dlc_train/apis/train.py", "dlc_train/runners/train.py",
                                    "dlc_train/runners/schedulers.py"])
def test_optional_keys_cover_what_the_trainer_reads(source):
    """OPTIONAL_KEYS must grow with the trainer, or --set would refuse a key it reads."""
    from dlc_train.config.overrides import OPTIONAL_KEYS

    read = set(re.findall(r"""\.get\(\s*["'](\w+)["']""", (ROOT / source).read_text()))
    assert read
    leaves = {key.rsplit(".", 1)[-1] for key in OPTIONAL_KEYS}
    assert read - leaves - set(_NOT_CONFIG_KEYS) == set()


def test_every_transform_option_build_transforms_takes_can_be_set():
    """build_transforms reads its keys from tables (config/defaults.py), not with .get() calls:
    every option it accepts must be settable with --set, and an option it refuses must be
    refused by the override check too, before anything is written."""
    from dlc_train.config import ConfigError
    from dlc_train.config.defaults import TRANSFORM_KEYS, TRANSFORM_OPTIONS
    from dlc_train.config.overrides import UnknownConfigKeyError, check_override_keys
    from dlc_train.data.transforms import build_transforms

    for key in TRANSFORM_KEYS:
        check_override_keys({}, {f"data.train.{key}": None})
    for key, options in TRANSFORM_OPTIONS.items():
        for option in options:
            check_override_keys({}, {f"data.inference.{key}.{option}": None})
    with pytest.raises(UnknownConfigKeyError, match="data.train.affine.rotate"):
        check_override_keys({}, {"data.train.affine.rotate": 30})
    with pytest.raises(ConfigError, match="'affine' has no option 'rotate'"):
        build_transforms({"affine": {"rotate": 30}})


# -- 3. epochs ----------------------------------------------------------------------------------

def test_zero_epochs_is_refused(project):
    from dlc_train.apis import train_network
    from dlc_train.config import ConfigError

    before = _tree(project.parent)
    res = invoke(["train", project, "--epochs", "0", *FAST])
    one_error_line(res, "Invalid value for '--epochs': 0 is not in the range x>=1",
                   "dlc train -h")
    assert "Traceback" not in res.output
    # The same through the config, and through the Python API.
    one_error_line(invoke(["train", project, *FAST, "--set",
                                    "train_settings.epochs=0"]),
                           "train_settings.epochs must be at least 1, got 0")
    with pytest.raises(ConfigError, match="epochs must be at least 1"):
        train_network(project, epochs=0)
    assert not _train_folder(project).exists()
    assert set(_tree(project.parent)) - set(before) <= {
        p for p in _tree(project.parent) if p.startswith("training-datasets/")}


# -- 4. progress, resume ------------------------------------------------------------------------

def test_progress_lines_resume_and_nothing_left_to_train(project, one_thread):
    folder = _train_folder(project)
    res = invoke(["train", project, "--epochs", "1", *FAST])
    assert res.exit_code == 0, res.output
    assert re.search(r"^epoch 1/1: loss \d+\.\d{5}, lr 5\.00e-04, test\.rmse \d+\.\d{3}, .*"
                     r"test\.mAP \d\.\d{3}, .*\d+\.\d s$", res.stdout, re.M), res.stdout
    assert res.stdout.splitlines()[-1] == f"snapshots in {folder}"

    res = invoke(["train", project, "--epochs", "2", "--resume", *FAST])
    assert res.exit_code == 0, res.output
    assert (f"resuming from {folder / 'snapshot-001.pt'} (epoch 1); training epochs 2 to 2"
            in res.stdout.splitlines()), res.stdout
    assert re.search(r"^epoch 2/2: loss \d+\.\d{5}, lr ", res.stdout, re.M), res.stdout
    assert "epoch 1/" not in res.stdout

    # At epoch 2 of 2: an error that says where the shuffle is, and nothing changes.
    before = _tree(folder)
    line = one_error_line(invoke(["train", project, "--epochs", "2", "--resume"]),
                                  f"{folder / 'snapshot-002.pt'} is at epoch 2")
    assert "--epochs" in line and "larger than 2" in line
    assert _tree(folder) == before

    # --no-progress: only the final line is printed.
    res = invoke(["train", project, "--epochs", "3", "--resume", "--no-progress", *FAST])
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines() == [f"snapshots in {folder}"]
    assert res.stderr == ""
    assert sorted(p.name for p in folder.glob("snapshot-[0-9]*.pt")) == [
        "snapshot-001.pt", "snapshot-002.pt", "snapshot-003.pt"]


def test_training_again_over_snapshots_needs_overwrite(project, one_thread):
    """Without --resume a new run would replace the shuffle's snapshots: refused, unless
    --overwrite says so (then the earlier ones are replaced by the new run's)."""
    folder = _train_folder(project)
    assert invoke(["train", project, "--epochs", "2", "--no-progress", *FAST]).exit_code == 0
    before = _tree(folder)
    line = one_error_line(invoke(["train", project, "--epochs", "1", *FAST]), str(folder),
                          "snapshot-002.pt (epoch 2)")
    assert "--resume" in line and "--overwrite" in line and "=True" not in line
    assert _tree(folder) == before

    res = invoke(["train", project, "--epochs", "1", "--overwrite", "--no-progress", *FAST])
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in folder.glob("snapshot-*.pt"))
    assert "snapshot-002.pt" not in names and "snapshot-001.pt" in names
    stats = (folder / "learning_stats.csv").read_text().splitlines()
    assert len(stats) == 2 and stats[1].startswith("1,")  # header + this run's epoch 1 only


# -- 5. --net-type ------------------------------------------------------------------------------

def test_unknown_net_type_lists_the_choices(project):
    before = _tree(project.parent)
    line = one_error_line(invoke(["train", project, "--net-type", "resnet50"]),
                                  "unknown net type 'resnet50'; did you mean resnet_50?")
    assert "resnet_tiny" in line and "top_down_hrnet_w32" in line and "dekr_w32" in line
    assert _tree(project.parent) == before

    # A net type that conflicts with the shuffle's existing config: one line too.
    assert invoke(["train", project, "--epochs", "1", "--no-progress", *FAST]).exit_code == 0
    pose_config = _train_folder(project) / "pytorch_config.yaml"
    written = pose_config.read_bytes()
    one_error_line(invoke(["train", project, "--net-type", "resnet_18"]),
                           "is a resnet_tiny config; net_type resnet_18 conflicts with it")
    assert pose_config.read_bytes() == written


def test_train_help_lists_net_types_without_importing_torch():
    code = ("import sys\n"
            "from click.testing import CliRunner\n"
            "import dlc_cli.main\n"
            "assert 'torch' not in sys.modules, 'importing dlc_cli.main imported torch'\n"
            "res = CliRunner().invoke(dlc_cli.main.cli, ['train', '--help'])\n"
            "assert res.exit_code == 0, res.output\n"
            "assert 'torch' not in sys.modules, 'dlc train --help imported torch'\n"
            "print(res.output)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "--no-progress" in text
    assert "resnet_tiny" in text and "top_down_resnet_50" in text and "dlcrnet_stride16_ms5" in text
