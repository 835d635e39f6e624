"""Reads a load file as SGLang's --init-expert-location does and prints each layer's total tokens.

usage: python3 read_sglang_load.py FILE.json

SGLang reads a `.json` file with `json.loads(Path(path).read_text())` and, when the object has
`logical_count`, passes that [layers][logical experts] matrix to its EPLB placement
(`ExpertLocationMetadata.init_by_eplb`). This script checks that shape (one row per layer, every
row as long, non-negative integers) and prints the per-layer totals as a JSON array.
"""
import json
import sys
from pathlib import Path

data = json.loads(Path(sys.argv[1]).read_text())
if "logical_count" not in data:
    sys.exit(f"no logical_count in {sorted(data)}")
matrix = data["logical_count"]
if not matrix or not all(isinstance(row, list) for row in matrix):
    sys.exit("logical_count is not a [layers][experts] matrix")
if len({len(row) for row in matrix}) != 1:
    sys.exit("logical_count rows differ in length")
if not all(isinstance(v, int) and v >= 0 for row in matrix for v in row):
    sys.exit("logical_count holds something other than non-negative integers")
print(json.dumps([sum(row) for row in matrix]))
