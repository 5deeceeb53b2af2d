"""``benchmarks/map.py`` with the reconstruction novelty's batch-shift rule set, to compare rules:

    /work/bench-venv/bin/python benchmarks/map_rule.py Q [map.py's arguments]

``Q`` replaces ``scpermut.model.novelty.BATCH_SHIFT_QUANTILE`` (a new batch whose median
reconstruction score is above that quantile of the reference's is scaled down to it). scpermut
is imported before the benchmark's modules, so the reference models differ in their last bits
from ``map.py`` run directly: compare rules through this script only.
"""

import sys
from pathlib import Path

import scpermut.model.novelty as novelty

sys.path.insert(0, str(Path(__file__).resolve().parent))
novelty.BATCH_SHIFT_QUANTILE = float(sys.argv[1])

import map as map_task  # noqa: E402

map_task.main(sys.argv[2:])
