"""``dlc track``: track finished results again without running the network, and the tracking
options ``dlc analyze`` shares (see ``dlc_runtime.tracking`` and docs/tracking.md)."""
from __future__ import annotations

from pathlib import Path

import click

from dlc_cli.errors import in_cli_words, one_line_errors

METHODS = ["ellipse", "box", "skeleton"]


def track_options(command):
    """The tracking options of ``dlc analyze``."""
    for decorator in reversed([
        click.option("--track", type=click.Choice(METHODS), default=None,
                     help="Track the animals (multi-animal bundles) with this tracker and "
                          "stitch them into --n-animals tracks (_el.h5, _bx.h5, _sk.h5)."),
        click.option("--n-animals", type=click.IntRange(min=1), default=None,
                     help="Animals to stitch into (default: the bundle's individuals)."),
        click.option("--track-option", "track_option", multiple=True, metavar="KEY=VALUE",
                     help="Repeatable: a tracker parameter (max_age=100, min_hits=3, "
                          "iou_threshold=0.2, sd, oks_threshold, boundingboxslack) or a "
                          "stitching setting (min_length=10, max_gap, split_tracklets, "
                          "animal_names=a,b,c, identity_only)."),
        click.option("--ctd-tracking", is_flag=True,
                     help="Conditional top-down bundles: DeepLabCut's CTD tracking (each "
                          "frame's conditions from the previous frame's poses, bottom-up "
                          "re-seeding); animal i of the .h5 stays the same animal."),
        click.option("--ctd-option", "ctd_option", multiple=True, metavar="KEY=VALUE",
                     help="Repeatable, with --ctd-tracking: bu_on_lost_idv, bu_min_frequency, "
                          "bu_max_frequency=100, threshold_bu_add=0.25, threshold_ctd, "
                          "threshold_nms (DeepLabCut's CTDTrackingConfig)."),
    ]):
        command = decorator(command)
    return command


def tracking_from_cli(method: str | None, n_animals: int | None, items: tuple[str, ...]):
    """The TrackingOptions the flags ask for (None without --track); a bad one is a usage
    error naming its flag."""
    from dlc_cli.options import parse_backend_options

    if method is None:
        if n_animals is not None or items:
            raise click.BadParameter("needs --track (ellipse, box or skeleton)",
                                     param_hint="--n-animals/--track-option")
        return None
    from dlc_runtime.errors import TrackingError
    from dlc_runtime.tracking.options import TrackingOptions

    settings = parse_backend_options(items, option="--track-option")
    try:
        return TrackingOptions.from_settings(method, n_animals, settings)
    except TrackingError as err:
        raise click.BadParameter(str(err), param_hint="--track-option") from None


def ctd_tracking_from_cli(enabled: bool, items: tuple[str, ...]):
    """The CTDTrackingOptions the flags ask for (None without --ctd-tracking)."""
    from dlc_cli.options import parse_backend_options

    if not enabled:
        if items:
            raise click.BadParameter("needs --ctd-tracking", param_hint="--ctd-option")
        return None
    from dlc_runtime.errors import TrackingError
    from dlc_runtime.pipelines.ctd_tracking import CTDTrackingOptions

    settings = parse_backend_options(items, option="--ctd-option")
    try:
        return CTDTrackingOptions.from_dict(settings)
    except TrackingError as err:
        raise click.BadParameter(str(err), param_hint="--ctd-option") from None


def _method_of(source: Path) -> str | None:
    from dlc_runtime.tracking.el_format import TRACK_METHODS

    for method, suffix in TRACK_METHODS.items():
        if source.name.endswith(suffix + ".pickle"):
            return method
    return None


@click.command("track")
@click.argument("sources", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--track-method", type=click.Choice(METHODS), default=None,
              help="Tracker for .h5 and _full.pickle sources (default: ellipse); an _el/_bx/"
                   "_sk.pickle is stitched again with its own.")
@click.option("--n-animals", type=click.IntRange(min=1), default=None,
              help="Animals to stitch into (default: the result's individuals).")
@click.option("--track-option", "track_option", multiple=True, metavar="KEY=VALUE",
              help="Repeatable: tracker parameters and stitching settings, as dlc analyze's.")
@click.option("--identity", is_flag=True,
              help="The model had an identity head: slot i of each frame is individual i.")
@click.option("--save-as-csv", is_flag=True, help="Also write the tracks as .csv.")
@one_line_errors
def track(sources, track_method, n_animals, track_option, identity, save_as_csv):
    """Track finished results without running the network again.

    SOURCES are multi-animal analysis results: <video><scorer>.h5 or _full.pickle (tracked,
    then stitched), or _el.pickle / _bx.pickle / _sk.pickle (stitched again, e.g. with another
    --n-animals or min_length). The files are written beside each source.
    """
    for source in sources:
        if not source.is_file():
            raise click.BadParameter(f"no file {source}", param_hint="SOURCES")
        kept = _method_of(source)
        if kept and track_method and track_method != kept:
            raise click.BadParameter(f"{source.name} holds {kept} tracklets; drop "
                                     "--track-method to stitch them again",
                                     param_hint="--track-method")
        options = tracking_from_cli(kept or track_method or "ellipse", n_animals, track_option)
        outputs = _track_one(source, options, identity, save_as_csv, restitched=bool(kept))
        if outputs.error:
            from dlc_runtime.errors import TrackingError

            raise TrackingError(f"{source}: not stitched ({outputs.error}); the tracklets are "
                                f"in {outputs.tracklets_pickle}")
        click.echo(in_cli_words(f"{source}: {outputs.summary()}"))


def _track_one(source: Path, options, identity: bool, save_as_csv: bool, restitched: bool):
    from dlc_runtime.tracking.track_results import (FULL_SUFFIX, restitch, track_full_pickle,
                                                    track_h5)

    if restitched:
        return restitch(source, options, save_as_csv=save_as_csv)
    if source.name.endswith(FULL_SUFFIX):
        return track_full_pickle(source, options, identity_slots=identity,
                                 save_as_csv=save_as_csv)
    if source.suffix == ".h5":
        return track_h5(source, options, identity, save_as_csv)
    raise click.BadParameter(f"{source.name} is not an analysis .h5, _full.pickle or "
                             "_el/_bx/_sk.pickle", param_hint="SOURCES")
