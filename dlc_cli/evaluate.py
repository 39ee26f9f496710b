"""``dlc evaluate``: a trained shuffle's metrics and predictions, as DeepLabCut 3's
``evaluate_network`` writes them (see ``dlc_train.apis.evaluate`` and docs/evaluate.md)."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from dlc_cli.errors import one_line_errors


def _index(value: str | None) -> int | str | None:
    """``--snapshot-index`` / ``--trainset-index``: a number, or a word the API checks."""
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return value


@click.command("evaluate")
@click.argument("config", type=click.Path(path_type=Path))
@click.option("--shuffle", "shuffles", type=int, multiple=True, default=(1,), show_default=True,
              help="Shuffle to evaluate (repeatable).")
@click.option("--trainset-index", default="0", show_default=True,
              help="Index into the project's TrainingFraction, or 'all'.")
@click.option("--snapshot-index", default=None,
              help="Which snapshot: a number (-1: the last, i.e. the best one when there is "
                   "one), 'best' or 'all' (default: the project's snapshotindex).")
@click.option("--snapshot", "snapshots", multiple=True, metavar="NAME",
              help="Evaluate this snapshot (e.g. snapshot-050; repeatable; replaces "
                   "--snapshot-index).")
@click.option("--plot", "plot", is_flag=True,
              help="Draw predictions over the labels on every labeled frame (PNG files in "
                   "LabeledImages_<scorer>/ of the evaluation folder; needs matplotlib).")
@click.option("--plot-by", type=click.Choice(["bodypart", "individual"]), default="bodypart",
              show_default=True, help="With --plot: a colour per bodypart or per individual.")
@click.option("--pcutoff", type=click.FloatRange(0, 1), default=None,
              help="Likelihood threshold of 'rmse_pcutoff' (default: the project's pcutoff).")
@click.option("--comparison-bodypart", "comparison_bodyparts", multiple=True,
              help="Evaluate only this bodypart (repeatable; default: all).")
@click.option("--per-keypoint", is_flag=True,
              help="Also write <scorer>-keypoint-results.csv (RMSE per bodypart).")
@click.option("--pck", "pck_thresholds", type=click.FloatRange(min=0, min_open=True),
              multiple=True, metavar="PIXELS",
              help="PCK at this distance in pixels (repeatable; <scorer>-pck-results.csv).")
@click.option("--detector-snapshot-index", default=None,
              help="Top-down shuffles: which detector snapshot finds the boxes: a number "
                   "(-1: the last), 'best' or 'all' (default: the project's "
                   "detector_snapshotindex).")
@click.option("--gt-boxes", is_flag=True,
              help="Top-down shuffles: crop around boxes made from the labels instead of "
                   "running the detector.")
@click.option("--device", default=None, help="cpu, cuda, cuda:0 or auto.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Images of the same size per forward pass.")
@one_line_errors
def evaluate(config, shuffles, trainset_index, snapshot_index, snapshots, plot, plot_by,
             pcutoff, comparison_bodyparts, per_keypoint, pck_thresholds, detector_snapshot_index,
             gt_boxes, device, batch_size):
    """Evaluate trained snapshots of a DeepLabCut project (CONFIG: its config.yaml).

    Writes DeepLabCut 3's files to <project>/evaluation-results-pytorch/iteration-<i>/
    <Task><date>-trainset<pct>shuffle<n>/: <scorer>-results.csv (RMSE, RMSE above pcutoff, mAP,
    mAR on the train and test images), <scorer>.h5 (the predictions) and the combined results
    two folders up.
    """
    from dlc_train.apis import evaluate_network
    from dlc_train.evaluation.plots import require_matplotlib

    if plot:
        try:
            require_matplotlib()
        except ImportError as err:
            click.echo(f"Error: {err}", err=True)
            sys.exit(1)
    results = evaluate_network(
        config, shuffles=list(shuffles), trainingsetindex=_index(trainset_index),
        snapshotindex=_index(snapshot_index), device=device,
        plotting=plot_by if plot else False, show_errors=True,
        snapshots_to_evaluate=list(snapshots) or None,
        comparison_bodyparts=list(comparison_bodyparts) or None,
        per_keypoint_evaluation=per_keypoint, pcutoff=pcutoff,
        pck_thresholds=list(pck_thresholds) or None, batch_size=batch_size,
        detector_snapshot_index=_index(detector_snapshot_index), ground_truth_boxes=gt_boxes)
    for result in results:
        click.echo(f"results in {result.files['results']}")
