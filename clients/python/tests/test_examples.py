"""The PyTorch example needs torch, which the test machines do not have; check what can be
checked without it: it parses, and every keyword it passes to the client exists."""

from __future__ import annotations

import ast
import inspect

from conftest import CLIENT_ROOT
from moe_metricsd_client import MetricsClient, make_decision

EXAMPLE = CLIENT_ROOT / "examples" / "torch_router_hook.py"


def calls(tree, method):
    return [node for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == method]


def test_torch_example_uses_the_client_api():
    tree = ast.parse(EXAMPLE.read_text(), str(EXAMPLE))
    records = calls(tree, "record")
    assert records, "the example should call client.record"
    known = set(inspect.signature(make_decision).parameters)
    for call in records:
        names = {k.arg for k in call.keywords}
        assert names <= known, names - known
        assert len(call.args) == 2  # layer and counts, positionally
    constructors = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "MetricsClient"]
    assert constructors
    known_init = set(inspect.signature(MetricsClient.__init__).parameters)
    for call in constructors:
        assert {k.arg for k in call.keywords} <= known_init
    # The counts come from torch.bincount, as the README promises.
    assert "torch.bincount(" in EXAMPLE.read_text()
