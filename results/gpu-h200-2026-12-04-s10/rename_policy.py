"""Copy a policy artifact under another name (the GPU demo asks the service for a candidate by name beside
the shipped default). Run: python results/gpu-h200-2026-12-04-s10/rename_policy.py SRC_DIR DST_DIR NAME"""

from __future__ import annotations

import sys

sys.path.insert(0, ".")
from client.policy.artifact import export_artifact, load_artifact

src, dst, name = sys.argv[1:4]
a = load_artifact(src)
m = a.manifest
path = export_artifact(
    a.weights,
    a.config,
    dst,
    name=name,
    version=m.version,
    training_command=m.training.command if m.training else "",
    metrics=dict(m.metrics),
    extra={**dict(m.extra), "renamed_from": m.name},
)
print(path)
