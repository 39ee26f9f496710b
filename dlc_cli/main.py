"""The ``dlc`` command line: train, export, analyze, demo.

Each command imports its package inside the command, so ``dlc analyze`` loads only the lean
runtime (no torch) and ``dlc --help`` is instant.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from dlc_cli.cluster import cluster_options, cluster_runner
from dlc_cli.errors import (OneLineGroup, error_line, in_cli_words, interrupt_types,
                            one_line_errors)
from dlc_cli.options import parse_size
from dlc_cli.track import ctd_tracking_from_cli, track_options, tracking_from_cli


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


@click.group(name="dlc", cls=OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
@click.argument("config", type=click.Path(path_type=Path), required=False)
@click.option("--coco", "coco_dir", type=click.Path(path_type=Path), default=None,
              metavar="DIR",
              help="Train on a COCO keypoint dataset instead of a project: DIR holds "
                   "annotations/train.json, annotations/test.json and images/; the model goes "
                   "to DIR/experiments/<net type>/train/.")
@click.option("--shuffle", default=1, show_default=True, help="Shuffle index.")
@click.option("--trainset-index", default=0, show_default=True,
              help="Index into the project's TrainingFraction.")
@click.option("--net-type", cls=_NetTypeOption, default=None, metavar="NAME")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Total epochs, resumed ones included (overrides the config).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Images per step (per process under torchrun).")
@click.option("--detector-epochs", type=click.IntRange(min=0), default=None,
              help="Top-down shuffles: the detector's total epochs, trained before the pose "
                   "model (overrides the config; 0: do not train the detector).")
@click.option("--device", default=None,
              help="cpu, cuda, cuda:0 or auto (under torchrun: cuda, cpu or auto).")
@click.option("--resume", is_flag=True, help="Continue from the latest snapshot of the shuffle.")
@click.option("--overwrite", is_flag=True,
              help="Train again from epoch 1 in a shuffle that has snapshots, replacing them.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a pytorch_config.yaml value, e.g. --set runner.eval_interval=1 "
                   "(the key must exist in the config or be one the trainer reads).")
@click.option("--no-progress", is_flag=True,
              help="No progress bar and no per-epoch lines (logging only).")
@one_line_errors
def train(config, coco_dir, shuffle, trainset_index, net_type, epochs, batch_size,
          detector_epochs, device, resume, overwrite, overrides, no_progress):
    """Train a pose model on a DeepLabCut project (CONFIG: its config.yaml) or, with --coco, on
    a COCO keypoint dataset."""
    from dlc_train.apis import train_network
    from dlc_train.config import ConfigError
    from dlc_train.config.overrides import UnknownConfigKeyError

    if (config is None) == (coco_dir is None):
        raise click.UsageError("give a project's CONFIG or --coco DIR (one of them)")
    try:
        if coco_dir is not None:
            from dlc_train.apis.train_loader import train_coco

            train_dir = train_coco(coco_dir, net_type=net_type, epochs=epochs,
                                   batch_size=batch_size, device=device, resume=resume,
                                   overwrite=overwrite,
                                   pytorch_config_overrides=_parse_overrides(overrides),
                                   progress=not no_progress)
        else:
            train_dir = train_network(config, shuffle=shuffle, trainset_index=trainset_index,
                                      net_type=net_type, epochs=epochs, batch_size=batch_size,
                                      device=device, resume=resume,
                                      pytorch_config_overrides=_parse_overrides(overrides),
                                      progress=not no_progress, overwrite=overwrite,
                                      detector_epochs=detector_epochs)
    except UnknownConfigKeyError as err:
        raise ConfigError(f"--set {err}") from None
    from dlc_train.runners.distributed import is_main_process

    if is_main_process():  # under torchrun: once, not once per process
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
@click.option("--format", "fmt", type=click.Choice(["onnx", "tensorrt", "torch", "openvino"]),
              default="onnx", show_default=True,
              help="onnx: the ONNX graphs (with --precision fp16 also their fp16 variants); "
                   "tensorrt: also TensorRT engines for this GPU; torch: also TorchScript "
                   "artifacts (GPUs without TensorRT). Every bundle has the fp32 ONNX graphs.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16", "int8"]),
              default="fp32", show_default=True,
              help="Precision of the engines / torch artifacts / extra ONNX graphs (fp16: the "
                   "network in half, same inputs and outputs; bf16: likewise, torch only; "
                   "int8: tensorrt or openvino).")
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
        raise click.BadParameter(f"{fmt} artifacts are {kinds} (int8: --format tensorrt or openvino)",
                                 param_hint="--precision")
    size = parse_size(input_size)
    if output is not None:
        from dlc_runtime.inputs import check_output_folder

        # Before the model is built: a read-only folder is one line, not a failed rename.
        check_output_folder(output.absolute().parent, "the folder of -o")
    common = dict(frames=frames, tolerance_px=tolerance,
                  allow_parity_failure=allow_parity_failure, device=device,
                  onnx_precisions=(precision,) if fmt == "onnx" and precision != "fp32"
                  else (),
                  torch_precisions=(precision,) if fmt == "torch" else (),
                  openvino_precisions=(precision,) if fmt == "openvino" else (),
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
@click.argument("bundle", type=click.Path(path_type=Path), metavar="BUNDLE")
@click.argument("videos", nargs=-1, required=True, metavar="VIDEOS...")
@click.option("--video-type", "video_types", multiple=True, metavar="EXT",
              help="Only videos with this extension, e.g. mp4 (repeatable). Default: files "
                   "as given, and every video extension DeepLabCut knows in folders and "
                   "globs.")
@click.option("--shuffle", default=1, show_default=True,
              help="With a project config.yaml as BUNDLE: the shuffle whose exported bundle "
                   "runs.")
@click.option("--trainset-index", default=0, show_default=True,
              help="With a project config.yaml: index into its TrainingFraction.")
@click.option("--snapshot-index", default=None, type=int,
              help="With a project config.yaml: the snapshot whose bundle runs (default: the "
                   "project's snapshotindex).")
@click.option("--dest", type=click.Path(path_type=Path), default=None,
              help="Output folder (default: beside each video). Created when missing; checked "
                   "before any work.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--backend", type=click.Choice(["onnxruntime", "tensorrt", "torch", "openvino"]),
              default="onnxruntime", show_default=True,
              help="tensorrt / torch need a bundle exported with --format tensorrt / torch.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16", "int8"]), default=None,
              help="onnxruntime / torch / openvino: run the bundle's graphs of this "
                   "precision (exported with that --precision; bf16: torch or openvino; "
                   "int8: openvino). Default: fp32; torch the best for the device. A "
                   "TensorRT engine's precision is fixed at export.")
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
@click.option("--start", default=None, metavar="FRAME|TIME",
              help="First frame: an index (100) or a time (90.5s, 1:30, 1:02:03.5).")
@click.option("--stop", default=None, metavar="FRAME|TIME",
              help="Stop before this frame (index or time); default: the end.")
@click.option("--stride", type=click.IntRange(min=1), default=1, show_default=True,
              help="Analyze every N-th frame from --start; rows keep the video's frame indices.")
@click.option("--strict", is_flag=True,
              help="Stop at the first unreadable frame (default: such frames become NaN rows, "
                   "listed in _meta.pickle).")
@click.option("--checkpoint-seconds", type=click.FloatRange(min=1.0), default=60.0,
              show_default=True,
              help="Save a resumable checkpoint this often; a rerun after a crash continues "
                   "from it.")
@click.option("--no-resume", is_flag=True, help="Ignore checkpoints; start every video over.")
@track_options
@cluster_options
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@one_line_errors
def analyze(bundle, videos, video_types, shuffle, trainset_index, snapshot_index, dest,
            batch_size, device, backend, precision, save_as_csv, overwrite, allow_truncated,
            decoder, backend_option, start, stop, stride, strict, checkpoint_seconds, no_resume,
            track, n_animals, track_option, ctd_tracking, ctd_option, cluster, address, workers,
            gpus_per_worker, threads_per_worker, no_progress):
    """Run a bundle over videos; write DeepLabCut-compatible .h5 results.

    BUNDLE is a bundle folder or a DeepLabCut project's config.yaml (its bundle exported for
    --shuffle). VIDEOS are files, folders (their videos) and globs ("videos/*.mp4"). The bundle
    is loaded once for all videos; a video that cannot be analyzed is reported and the others
    are analyzed; the exit code is then 1, after a summary line.

    With --track, the animals of a multi-animal bundle are tracked as the frames are analyzed
    and stitched into --n-animals tracks: <video><scorer>_el.pickle (tracklets) and _el.h5
    (one column block per animal; _bx / _sk for the box and skeleton trackers).
    """
    from dlc_cli.options import parse_backend_options
    from dlc_runtime.deeplabcut_api import load_bundle
    from dlc_runtime.inputs import check_output_folder, collect_videos

    run = cluster_runner(cluster, address, workers, gpus_per_worker, threads_per_worker,
                         local=_analyze_all)  # --cluster ray: dlc_cli/cluster.py
    options = parse_backend_options(backend_option)
    tracking = tracking_from_cli(track, n_animals, track_option)
    ctd = ctd_tracking_from_cli(ctd_tracking, ctd_option)
    if precision:
        options["precision"] = precision

    if backend == "tensorrt" and device == "cpu":
        device = "cuda"  # TensorRT runs on the GPU only
    if backend == "tensorrt" and precision:
        raise click.BadParameter("a TensorRT engine's precision is fixed when it is built "
                                 "(dlc export --format tensorrt --precision ...)",
                                 param_hint="--precision")
    if precision == "bf16" and backend not in ("torch", "openvino"):
        raise click.BadParameter("bf16 runs on the torch backend only (--backend torch, a "
                                 "bundle exported with --format torch --precision bf16) or on "
                                 "openvino (--format openvino --precision bf16)",
                                 param_hint="--precision")
    if precision == "int8" and backend != "openvino":
        raise click.BadParameter("int8 runs on openvino (--backend openvino, a bundle exported "
                                 "with --format openvino --precision int8); TensorRT engines "
                                 "carry their own precision", param_hint="--precision")
    loaded = load_bundle(bundle, shuffle, trainset_index, snapshot_index)
    if tracking is not None:
        from dlc_runtime.analysis_tracking import tracking_options

        tracking_options(loaded, tracking)  # a single-animal bundle: one line, before any work
    if ctd is not None and loaded.task != "cond_top_down":
        raise click.BadParameter(f"needs a conditional top-down bundle; {loaded.path} is "
                                 f"{loaded.task}", param_hint="--ctd-tracking")
    found, problems = collect_videos(videos, list(video_types) or None)
    if dest is not None:
        check_output_folder(dest, "--dest")
    run(loaded, found, problems, dest, not no_progress, backend=backend,
        device=device, backend_options=options, batch_size=batch_size,
        save_as_csv=save_as_csv, overwrite=overwrite, allow_truncated=allow_truncated,
        decoder=decoder, start=start, stop=stop, stride=stride, strict=strict,
        checkpoint_seconds=checkpoint_seconds, resume=not no_resume, track=tracking,
        ctd_tracking=ctd)


def _analyze_all(bundle, videos, problems, dest, progress: bool, **settings) -> None:
    """Analyzes every video with one backend, printing each result as it comes; a failed
    video is reported (stdout) and the next one analyzed. One video: its error is the one
    `Error:` line. Several: a summary line, the `Error:` line (exit code 1) if any failed.
    Ctrl-C: one line, exit code 130."""
    from tqdm.auto import tqdm

    from dlc_runtime.batch import BatchSummary, VideoAnalyzer, VideosFailedError, analyze_many
    from dlc_runtime.errors import VideoError

    def say(line: str) -> None:
        tqdm.write(in_cli_words(line), file=sys.stdout)  # above the progress bars

    single = len(videos) + len(problems) == 1
    summary = BatchSummary()
    with VideoAnalyzer(bundle, progress=progress, **settings) as analyzer:
        try:
            for outcome in analyze_many(analyzer, videos, dest, problems, progress):
                summary.outcomes.append(outcome)
                if outcome.result is not None:
                    say(outcome.result.summary())
                elif not single:  # one line per video on stdout; stderr: the one Error
                    say(f"failed: {outcome.reason}")
        except interrupt_types() as err:
            done = len(summary.outcomes) - len(problems)
            message = error_line(err) if str(err) else (
                "stopped by Ctrl-C" + (f" during {videos[done]}" if 0 <= done < len(videos)
                                       else "")
                + "; rerun the same command to continue (complete results are skipped)")
            if not single:
                message += (f" [{len(summary.of('analyzed'))} analyzed, "
                            f"{len(summary.of('skipped'))} skipped, {len(summary.failed)} "
                            f"failed before it, of {len(videos) + len(problems)}]")
            raise KeyboardInterrupt(message) from None
    if single and summary.failed:
        failed = summary.failed[0]
        raise failed.error if failed.error is not None else VideoError(failed.reason)
    if summary.failed:
        raise VideosFailedError(summary)  # the summary, as the one `Error:` line
    if not single:
        say(summary.line())


@cli.command()
@click.option("--output", "-o", type=click.Path(path_type=Path), default=Path("dlc-demo"),
              show_default=True, help="Working folder (new, or an earlier demo with "
                                      "--overwrite).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier demo in the folder.")
@click.option("--seed", default=0, show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Training epochs (default: tuned).")
@click.option("--multi-animal", is_flag=True,
              help="Three animals crossing, touching, leaving the frame and occluding each "
                   "other: track them and score identity switches, IDF1 and MOTA against the "
                   "ground truth (needs the tracking-metrics extra).")
@click.option("--tracker", type=click.Choice(["ellipse", "box", "skeleton"]), default=None,
              help="With --multi-animal: the tracker of the analysis [default: ellipse].")
@one_line_errors
def demo(output, overwrite, seed, epochs, multi_animal, tracker):
    """Generate a synthetic project, train a small model, export it, analyze the video."""
    if tracker and not multi_animal:
        raise click.UsageError("--tracker needs --multi-animal")
    if multi_animal:
        from dlc_cli.demo_multi import run_multi_animal_demo

        run_multi_animal_demo(output, seed=seed, epochs=epochs, echo=click.echo,
                              overwrite=overwrite, tracker=tracker or "ellipse")
        return
    from dlc_cli.demo import run_demo

    run_demo(output, seed=seed, epochs=epochs, echo=click.echo, overwrite=overwrite)


def _add_commands() -> None:
    from dlc_cli.benchmark import benchmark
    from dlc_cli.evaluate import evaluate
    from dlc_cli.track import track
    from dlc_cli.visualize import label_video, plot

    cli.add_command(benchmark)
    cli.add_command(evaluate)
    cli.add_command(label_video)
    cli.add_command(plot)
    cli.add_command(track)


_add_commands()

if __name__ == "__main__":
    cli()
