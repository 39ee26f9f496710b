"""The ``dlc`` command line: train, export, analyze, demo.

Each command imports its package inside the command, so ``dlc analyze`` loads only the lean
runtime (no torch) and ``dlc --help`` is instant.
"""
from __future__ import annotations

from pathlib import Path

import click

from dlc_cli.errors import in_cli_words, one_line_errors
from dlc_cli.options import parse_size


def _parse_overrides(pairs: tuple[str, ...]) -> dict:
    """``--set train_settings.epochs=5`` -> {"train_settings.epochs": 5} (values parsed as YAML)."""
    from dlc_train.config import safe_load_yaml

    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--set")
        overrides[key.strip()] = safe_load_yaml(value)
    return overrides


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dlc-deploy")
def cli():
    """Train DeepLabCut-style pose models, export them to ONNX, analyze videos fast."""


class _NetTypeOption(click.Option):
    """``--net-type``: its help lists the architectures, looked up only when help is shown.

    Importing dlc_train.config when the CLI loads would slow every ``dlc`` command (and
    ``dlc analyze`` loads only the lean runtime), so the list is not built at import.
    """

    def get_help_record(self, ctx):
        from dlc_train.config import available_net_types

        self.help = ("Architecture of a new shuffle (default: the project's default_net_type); "
                     "one of " + ", ".join(available_net_types())
                     + ". See the README's architecture table.")
        return super().get_help_record(ctx)


@cli.command()
@click.argument("config", type=click.Path(path_type=Path))
@click.option("--shuffle", default=1, show_default=True, help="Shuffle index.")
@click.option("--trainset-index", default=0, show_default=True,
              help="Index into the project's TrainingFraction.")
@click.option("--net-type", cls=_NetTypeOption, default=None, metavar="NAME")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Total epochs, resumed ones included (overrides the config).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None)
@click.option("--device", default=None, help="cpu, cuda, cuda:0 or auto.")
@click.option("--resume", is_flag=True, help="Continue from the latest snapshot of the shuffle.")
@click.option("--overwrite", is_flag=True,
              help="Train again from epoch 1 in a shuffle that has snapshots, replacing them.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a pytorch_config.yaml value, e.g. --set runner.eval_interval=1 "
                   "(the key must exist in the config or be one the trainer reads).")
@click.option("--no-progress", is_flag=True,
              help="No progress bar and no per-epoch lines (logging only).")
@one_line_errors
def train(config, shuffle, trainset_index, net_type, epochs, batch_size, device, resume,
          overwrite, overrides, no_progress):
    """Train a pose model on a DeepLabCut project (CONFIG: its config.yaml)."""
    from dlc_train.apis import train_network
    from dlc_train.config import ConfigError
    from dlc_train.config.overrides import UnknownConfigKeyError

    try:
        train_dir = train_network(config, shuffle=shuffle, trainset_index=trainset_index,
                                  net_type=net_type, epochs=epochs, batch_size=batch_size,
                                  device=device, resume=resume,
                                  pytorch_config_overrides=_parse_overrides(overrides),
                                  progress=not no_progress, overwrite=overwrite)
    except UnknownConfigKeyError as err:
        raise ConfigError(f"--set {err}") from None
    click.echo(f"snapshots in {train_dir}")


@cli.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--pytorch-config", type=click.Path(path_type=Path), default=None,
              help="With a snapshot SOURCE: its pytorch_config.yaml (default: beside it).")
@click.option("--shuffle", default=1, show_default=True, help="With a project SOURCE.")
@click.option("--trainset-index", default=0, show_default=True, help="With a project SOURCE.")
@click.option("--snapshot-index", default=None, type=int,
              help="With a project SOURCE: which snapshot (default: best, else the last).")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None,
              help="Bundle folder to write (default: <project>/exported-models-pytorch/...).")
@click.option("--frames", type=click.Path(path_type=Path), default=None,
              help="Video or image folder for the parity check (default: labeled frames).")
@click.option("--tolerance", type=float, default=0.5, show_default=True,
              help="Largest keypoint difference in pixels the parity check accepts.")
@click.option("--allow-parity-failure", is_flag=True,
              help="Write the bundle even when parity exceeds the tolerance.")
@click.option("--overwrite", is_flag=True,
              help="Replace an earlier bundle at the output folder (anything else there is "
                   "never replaced).")
@click.option("--format", "fmt", type=click.Choice(["onnx", "tensorrt", "torch"]),
              default="onnx", show_default=True,
              help="onnx: the ONNX graphs (with --precision fp16 also their fp16 variants); "
                   "tensorrt: also TensorRT engines for this GPU; torch: also TorchScript "
                   "artifacts (GPUs without TensorRT). Every bundle has the fp32 ONNX graphs.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16", "int8"]),
              default="fp32", show_default=True,
              help="Precision of the engines / torch artifacts / extra ONNX graphs (fp16: the "
                   "network in half, same inputs and outputs; bf16: likewise, torch only; "
                   "int8: tensorrt only).")
@click.option("--input-size", default=None, metavar="HxW",
              help="Bottom-up: network input size; the graph letterboxes frames of any "
                   "size to HxW (aspect ratio kept, black padding bottom/right) and returns "
                   "keypoints in frame pixels. With --format tensorrt also the frame size the "
                   "engine is built for (default: the frame's own size; TensorRT: the parity "
                   "frames'). Top-down networks already run at fixed sizes (the crop, the "
                   "detector's resize): there it only sets the TensorRT engines' frame size. "
                   "Conditional top-down: the network size of the bottom-up conditions model.")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Largest batch the bundle is built for (manifest input.batch max and opt; "
                   "the TensorRT profile). The runtime splits larger batches.")
@click.option("--calibration-video", "calibration_videos", multiple=True,
              type=click.Path(path_type=Path), help="int8: videos to calibrate on (repeatable).")
@click.option("--device", default="cpu", show_default=True,
              help="Where torch artifacts are traced and checked (cuda for fp16 on a GPU).")
@click.option("--conditions-config", type=click.Path(path_type=Path), default=None,
              help="CTD models, with a snapshot SOURCE: the bottom-up pytorch_config.yaml "
                   "giving the conditions (default: the shuffle in inference.conditions).")
@click.option("--conditions-snapshot", type=click.Path(path_type=Path), default=None,
              help="CTD models: that bottom-up model's snapshot (with --conditions-config).")
@one_line_errors
def export(source, pytorch_config, shuffle, trainset_index, snapshot_index, output, frames,
           tolerance, allow_parity_failure, overwrite, fmt, precision, input_size, batch,
           calibration_videos, device, conditions_config, conditions_snapshot):
    """Export a snapshot to a bundle (SOURCE: a project config.yaml or a snapshot .pt)."""
    from dlc_export import export_bundle, export_from_project

    if fmt in ("torch", "onnx") and precision == "int8":
        kinds = "fp32, fp16 or bf16" if fmt == "torch" else "fp32 or fp16"
        raise click.BadParameter(f"{fmt} artifacts are {kinds} (int8: --format tensorrt)",
                                 param_hint="--precision")
    size = parse_size(input_size)
    common = dict(frames=frames, tolerance_px=tolerance,
                  allow_parity_failure=allow_parity_failure, device=device,
                  onnx_precisions=(precision,) if fmt == "onnx" and precision != "fp32"
                  else (),
                  torch_precisions=(precision,) if fmt == "torch" else (),
                  tensorrt_precision=precision if fmt == "tensorrt" else None,
                  calibration_videos=calibration_videos, input_size=size, batch=batch,
                  overwrite=overwrite,
                  # TensorRT engines are built for one frame size: the same HxW.
                  frame_size=size if fmt == "tensorrt" else None)
    if conditions_config or conditions_snapshot:
        common.update(conditions_config=conditions_config,
                      conditions_snapshot=conditions_snapshot)
    if source.suffix == ".pt":
        config = pytorch_config or source.parent / "pytorch_config.yaml"
        result = export_bundle(config, source, output, **common)
    else:
        result = export_from_project(source, shuffle=shuffle, trainset_index=trainset_index,
                                     snapshot_index=snapshot_index, output=output, **common)
    click.echo(result.parity.summary())
    click.echo(f"bundle written to {result.bundle_dir}")


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("videos", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--dest", type=click.Path(path_type=Path), default=None,
              help="Output folder (default: beside each video).")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--backend", type=click.Choice(["onnxruntime", "tensorrt", "torch"]),
              default="onnxruntime", show_default=True,
              help="tensorrt / torch need a bundle exported with --format tensorrt / torch.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]), default=None,
              help="onnxruntime / torch: run the bundle's graphs of this precision (fp16, "
                   "bf16: exported with that --precision; bf16 torch only). Default: "
                   "onnxruntime fp32; torch the best for the device. A TensorRT engine's "
                   "precision is fixed at export.")
@click.option("--save-as-csv", is_flag=True, help="Also write the .csv DeepLabCut writes.")
@click.option("--overwrite", is_flag=True, help="Redo videos that already have results.")
@click.option("--allow-truncated", is_flag=True,
              help="Accept videos with fewer decodable frames than their header says.")
@click.option("--decoder", type=click.Choice(["auto", "cpu", "nvdec"]), default="auto",
              show_default=True,
              help="auto: NVDEC (pip install 'dlc-deploy[nvdec]') where the backend runs on a "
                   "GPU and takes GPU frames, else OpenCV on the CPU; the log says which.")
@click.option("--backend-option", "backend_option", multiple=True, metavar="KEY=VALUE",
              help="Repeatable backend setting, e.g. cuda_graphs=false, ring=4 (torch on "
                   "CUDA), provider=tensorrt, io_binding=false (onnxruntime).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@one_line_errors
def analyze(bundle, videos, dest, batch_size, device, backend, precision, save_as_csv,
            overwrite, allow_truncated, decoder, backend_option, no_progress):
    """Run a bundle over videos; write DeepLabCut-compatible .h5 results."""
    from dlc_cli.options import parse_backend_options
    from dlc_runtime import analyze_video

    options = parse_backend_options(backend_option)
    if precision:
        options["precision"] = precision

    if backend == "tensorrt" and device == "cpu":
        device = "cuda"  # TensorRT runs on the GPU only
    if backend == "tensorrt" and precision:
        raise click.BadParameter("a TensorRT engine's precision is fixed when it is built "
                                 "(dlc export --format tensorrt --precision ...)",
                                 param_hint="--precision")
    if precision == "bf16" and backend != "torch":
        raise click.BadParameter("bf16 runs on the torch backend only (--backend torch, a "
                                 "bundle exported with --format torch --precision bf16)",
                                 param_hint="--precision")
    for video in videos:
        result = analyze_video(bundle, video, dest_folder=dest, batch_size=batch_size,
                               backend=backend, device=device, save_as_csv=save_as_csv,
                               overwrite=overwrite, allow_truncated=allow_truncated,
                               progress=not no_progress, backend_options=options,
                               decoder=decoder)
        click.echo(in_cli_words(result.summary()))


@cli.command()
@click.option("--output", "-o", type=click.Path(path_type=Path), default=Path("dlc-demo"),
              show_default=True, help="Working folder (new, or an earlier demo with "
                                      "--overwrite).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier demo in the folder.")
@click.option("--seed", default=0, show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Training epochs (default: tuned).")
@one_line_errors
def demo(output, overwrite, seed, epochs):
    """Generate a synthetic project, train a small model, export it, analyze the video."""
    from dlc_cli.demo import run_demo

    run_demo(output, seed=seed, epochs=epochs, echo=click.echo, overwrite=overwrite)


def _add_commands() -> None:
    from dlc_cli.benchmark import benchmark

    cli.add_command(benchmark)


_add_commands()

if __name__ == "__main__":
    cli()
