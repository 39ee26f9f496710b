"""dlc_export: snapshot + config -> bundle (ONNX graph with preprocessing and decoding inside,
manifest, parity report)."""
from dlc_export.export import ExportResult, export_bundle
from dlc_export.onnx_export import ExportError
from dlc_export.parity import ParityError, ParityReport
from dlc_export.project import export_from_project, list_snapshots

__all__ = ["export_bundle", "export_from_project", "list_snapshots", "ExportResult",
           "ExportError", "ParityError", "ParityReport"]
