"""The export pipeline: source -> task -> every format's artifacts, each checked -> bundle.

The bundle is assembled in a hidden sibling folder and renamed into place only once every
artifact is written and has passed its parity check, so a failed export never leaves a half
bundle and never replaces a good one (``dlc_io.staged_folder``). For each format, in order:
write the artifacts of every graph of the task, list them in the manifest, open them through the
runtime's own backend, run the task's parity harness, write ``parity[.<format>].json``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlc_export.formats import ArtifactFormat, formats_for
from dlc_export.manifest_builder import CONFIG_FILE, build_manifest
from dlc_export.options import ExportOptions
from dlc_export.parity import ParityReport, enforce
from dlc_export.source import resolve_source
from dlc_export.tasks import make_task
from dlc_export.tasks.base import ExportContext
from dlc_io import staged_folder
from dlc_runtime.bundle import Bundle, Manifest, is_bundle_folder
from dlc_train.config import write_config

log = logging.getLogger(__name__)


@dataclass
class ExportResult:
    bundle_dir: Path
    #: the fp32 ONNX graphs' report (``parity.json``).
    parity: ParityReport
    manifest: Manifest
    #: every format's report by its label ("onnx_fp32", "torch_fp16", "tensorrt_int8"...).
    reports: dict[str, ParityReport] = field(default_factory=dict)


def export_bundle(pytorch_config_path: str | Path, snapshot_path: str | Path,
                  output: str | Path | None = None, options: ExportOptions | None = None,
                  **changes: Any) -> ExportResult:
    """Exports a snapshot to a bundle and checks every artifact against the PyTorch model.

    Args:
        pytorch_config_path: the shuffle's pytorch_config.yaml (any task: bottom-up,
            top-down, conditional top-down).
        snapshot_path: a ``snapshot-XXX.pt`` (ours or DeepLabCut 3's).
        output: bundle folder; default ``<project>/exported-models-pytorch/<scorer>.bundle``
            (beside the snapshot when the project is not found). It must be new, empty, or
            (with ``overwrite``) an earlier bundle; anything else is refused before any work.
        options: an :class:`ExportOptions`; ``changes`` set its fields by name
            (``export_bundle(cfg, snap, torch_precisions=("fp16",))``).
    """
    options = ExportOptions.build(options, **changes)
    options.check()
    source = resolve_source(pytorch_config_path, snapshot_path, output, options)
    task = make_task(source, options)
    options.check_tools()
    reports: dict[str, ParityReport] = {}
    with staged_bundle(source.output, options.overwrite) as staging:
        ctx = ExportContext(staging, task, source, options,
                            build_manifest(task.manifest_fields, source, options,
                                           record_snapshot=not options.random_pose),
                            export_nested=export_bundle)
        task.prepare(ctx)
        write_config(staging / CONFIG_FILE, source.config.raw)
        for fmt in formats_for(options):
            fmt.write(ctx)
            task.link(ctx, fmt)
            ctx.save_manifest()
            reports[fmt.label] = check_artifacts(ctx, fmt)
        manifest = Bundle.load(staging).manifest  # every file checked against its sha256
    log.info("%s bundle written to %s", manifest.task, source.output)
    return ExportResult(source.output, reports["onnx_fp32"], manifest, reports)


def check_artifacts(ctx: ExportContext, fmt: ArtifactFormat) -> ParityReport:
    """``fmt``'s artifacts through the runtime vs the eager model (the task's harness);
    writes the report and raises ParityError on failure (unless allow_parity_failure)."""
    frame_sets = fmt.frame_sets(ctx)
    hint = ""
    with fmt.open_backends(ctx) as backends:
        report = ctx.task.check(ctx, fmt, backends, frame_sets)
        if not report.passed and len(frame_sets) > 1 and \
                ctx.task.check(ctx, fmt, backends, frame_sets[:1]).passed:
            hint = (f"it matches on the traced frames, not on {frame_sets[1].shape[1:3]} "
                    "frames: the traced shapes do not generalise; ")
    report.to_json(ctx.staging / fmt.report_file)
    log.info("%s: %s", fmt.label, report.summary())
    return enforce(report, ctx.options.allow_parity_failure, hint + fmt.not_written, fmt.what)


def staged_bundle(output: Path, overwrite: bool = False):
    """A hidden sibling folder of ``output`` to write a bundle in (see
    :func:`dlc_io.staged_folder`): renamed onto ``output`` when the block succeeds, removed when
    it fails."""
    return staged_folder(output, what="bundle", is_ours=is_bundle_folder, overwrite=overwrite)
