"""The one manifest builder: the fields every bundle has, plus what its task decides.

Graph entries are added by the formats as they write artifacts (``dlc_export/formats/``);
the batch range follows the one rule ``docs/bundle.md`` states (``BatchRange.for_export``).
"""
from __future__ import annotations

from dlc_export.options import ExportOptions
from dlc_export.source import ExportSource
from dlc_export.tasks.base import TaskManifest
from dlc_runtime.bundle import InputSpec, Manifest, sha256_file

CONFIG_FILE = "pytorch_config.yaml"
PARITY_FILE = "parity.json"


def build_manifest(fields: TaskManifest, source: ExportSource, options: ExportOptions,
                   record_snapshot: bool = True) -> Manifest:
    """The manifest of an export, without graphs yet.

    Args:
        record_snapshot: False when the pose weights are random (tests, dry runs): the
            manifest then names no snapshot.
    """
    provenance = {
        "snapshot": str(source.snapshot.resolve()) if record_snapshot else None,
        "snapshot_sha256": sha256_file(source.snapshot) if record_snapshot else None,
        **fields.source,
        "net_type": source.config.net_type,
        "config": CONFIG_FILE,
    }
    size = fields.network_size
    return Manifest(
        task=fields.task, scorer=source.scorer, bodyparts=list(source.config.bodyparts),
        unique_bodyparts=list(fields.unique_bodyparts), individuals=list(fields.individuals),
        multi_animal=fields.multi_animal,
        input=InputSpec(batch=options.batch_range,
                        network_size=tuple(size) if size else None,
                        resize="letterbox" if size else None),
        decoder=dict(fields.decoder), graphs={}, source=provenance, parity=PARITY_FILE)
