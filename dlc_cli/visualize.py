"""``dlc label-video`` and ``dlc plot``: looking at a video's results
(see ``dlc_runtime.visualize`` and docs/visualize.md)."""
from __future__ import annotations

from pathlib import Path

import click

from dlc_cli.errors import in_cli_words, one_line_errors

def _names(values: tuple[str, ...]) -> str | list[str]:
    return list(values) if values else "all"


@click.command("label-video")
@click.argument("source", metavar="BUNDLE_OR_H5", type=click.Path(path_type=Path))
@click.argument("video", type=click.Path(path_type=Path))
@click.option("--dest", type=click.Path(path_type=Path), default=None,
              help="Folder the analysis wrote its results to (dlc analyze --dest); default: "
                   "beside the video. The labeled video goes beside the .h5.")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None,
              help="Write the labeled video to this file (or into this folder) instead.")
@click.option("--config", type=click.Path(path_type=Path), default=None,
              help="The project's config.yaml (skeleton, pcutoff, dotsize, colormap); default: "
                   "the one the bundle or the results name, when it exists here.")
@click.option("--pcutoff", type=click.FloatRange(0, 1), default=None,
              help="Draw keypoints whose likelihood is above this (default: the project's, "
                   "else 0.6).")
@click.option("--dotsize", type=click.IntRange(min=1), default=None,
              help="Dot radius in pixels (default: the project's, else 8).")
@click.option("--colormap", default=None,
              help="matplotlib colormap name (default: the project's, else rainbow).")
@click.option("--color-by", type=click.Choice(["bodypart", "individual"]), default=None,
              help="Default: individual for multi-animal results, else bodypart.")
@click.option("--draw-skeleton", is_flag=True,
              help="Draw the skeleton (the project's, else the bundle's PAF graph).")
@click.option("--skeleton-color", default=None,
              help="Colour name or #rrggbb (default: the project's, else black).")
@click.option("--bodypart", "bodyparts", multiple=True,
              help="Repeatable: draw only these bodyparts (default: all).")
@click.option("--individual", "individuals", multiple=True,
              help="Repeatable: draw only these individuals (default: all).")
@click.option("--codec", default="mp4v", show_default=True, help="FourCC of the output.")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Output frame rate (default: the video's).")
@click.option("--overwrite", is_flag=True, help="Replace an existing labeled video.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@one_line_errors
def label_video(source, video, dest, output, config, pcutoff, dotsize, colormap, color_by,
                draw_skeleton, skeleton_color, bodyparts, individuals, codec, fps, overwrite,
                no_progress):
    """Draw the keypoints of VIDEO's results on its frames (a labeled .mp4).

    BUNDLE_OR_H5: the bundle that analyzed VIDEO (its .h5 is found by scorer, as dlc analyze
    names it) or a result .h5.
    """
    from dlc_runtime.visualize import create_labeled_video

    result = create_labeled_video(
        source, video, dest_folder=dest, output=output, config=config, pcutoff=pcutoff,
        dotsize=dotsize, colormap=colormap, color_by=color_by, draw_skeleton=draw_skeleton,
        skeleton_color=skeleton_color, bodyparts=_names(bodyparts),
        individuals=_names(individuals), codec=codec, fps=fps, overwrite=overwrite,
        progress=not no_progress)
    click.echo(in_cli_words(result.summary()))


@click.command("plot")
@click.argument("source", metavar="BUNDLE_OR_H5", type=click.Path(path_type=Path))
@click.argument("video", required=False, type=click.Path(path_type=Path))
@click.option("--dest", type=click.Path(path_type=Path), default=None,
              help="Folder the analysis wrote its results to (dlc analyze --dest).")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None,
              help="Folder for the images (default: plot-poses/<video stem> beside the .h5).")
@click.option("--config", type=click.Path(path_type=Path), default=None,
              help="The project's config.yaml (pcutoff, colormap, alphavalue).")
@click.option("--pcutoff", type=click.FloatRange(0, 1), default=None,
              help="Positions below this likelihood are left out (default: the project's, "
                   "else 0.6).")
@click.option("--colormap", default=None, help="matplotlib colormap name.")
@click.option("--bodypart", "bodyparts", multiple=True, help="Repeatable (default: all).")
@click.option("--individual", "individuals", multiple=True, help="Repeatable (default: all).")
@click.option("--resolution", type=click.IntRange(min=10), default=100, show_default=True,
              help="Dots per inch.")
@click.option("--image-type", type=click.Choice([".png", ".jpg", ".svg", ".pdf"]),
              default=".png", show_default=True)
@one_line_errors
def plot(source, video, dest, output, config, pcutoff, colormap, bodyparts, individuals,
         resolution, image_type):
    """Plot trajectories, positions and likelihood over time, and a histogram of
    frame-to-frame jumps, per individual (PNG files, as DeepLabCut's plot_trajectories).

    BUNDLE_OR_H5: the bundle that analyzed VIDEO (then VIDEO is needed) or a result .h5.
    """
    from dlc_runtime.visualize import plot_trajectories

    result = plot_trajectories(source, video, dest_folder=dest, output_folder=output,
                               config=config, pcutoff=pcutoff, colormap=colormap,
                               bodyparts=_names(bodyparts), individuals=_names(individuals),
                               resolution=resolution, image_type=image_type)
    click.echo(result.summary())


__all__ = ["label_video", "plot"]
