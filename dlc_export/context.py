"""``ExportContext``: one export in progress, handed to its task and formats."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from dlc_export.options import ExportOptions
from dlc_export.parity import ParityGate
from dlc_export.source import ExportSource
from dlc_runtime.bundle import Bundle, Manifest, write_manifest

if TYPE_CHECKING:
    from dlc_export.tasks.base import ExportTask


@dataclass
class ExportContext:
    """The staging folder (renamed onto the output only when everything passed), the task,
    where it came from, the options, and the manifest the formats add their artifacts to."""

    staging: Path
    task: ExportTask
    source: ExportSource
    options: ExportOptions
    manifest: Manifest
    #: ``export_nested(config, snapshot, output, options) -> ExportResult``: the pipeline
    #: itself, for a bundle inside this one (CTD's conditions bundle).
    export_nested: Callable[..., Any] | None = None

    def save_manifest(self) -> None:
        """Writes the manifest (and fills its entries' sha256)."""
        write_manifest(self.staging, self.manifest)

    def bundle(self) -> Bundle:
        """The staged bundle as the runtime loads it."""
        return Bundle.load(self.staging)

    def gate(self, precision: str) -> ParityGate:
        return ParityGate.for_precision(precision, self.options.tolerance_px,
                                        self.source.pcutoff)
