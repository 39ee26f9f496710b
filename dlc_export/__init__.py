"""dlc_export: snapshot + config -> bundle (graphs with pre-processing and decoding inside,
manifest, parity reports). ``tasks/`` say what each kind of model exports, ``formats/`` how each
artifact is written and checked, ``pipeline.py`` runs them (docs/architecture.md)."""
from dlc_export.errors import ExportError, ParityError
from dlc_export.options import ExportOptions
from dlc_export.parity import ParityReport
from dlc_export.pipeline import ExportResult, export_bundle
from dlc_export.project import export_from_project
from dlc_export.source import list_snapshots

__all__ = ["export_bundle", "export_from_project", "list_snapshots", "ExportOptions",
           "ExportResult", "ExportError", "ParityError", "ParityReport"]
