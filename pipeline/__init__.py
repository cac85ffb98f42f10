"""Curation on Apache Beam (see README and docs/curation.md).

Importing the package installs one logging filter: Beam's GCP modules warn "apitools not found ..." through the
root logger when they are imported, although nothing here uses BigQuery. That line, and only it, is dropped;
every other warning passes. (What local worker processes print: pipeline/runner.py.)
"""
import logging


class _BeamImportNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("apitools not found")


if not any(isinstance(f, _BeamImportNoise) for f in logging.getLogger().filters):
    logging.getLogger().addFilter(_BeamImportNoise())
