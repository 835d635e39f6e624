"""moe_metricsd_client.torch with real torch and transformers, on CPU, against the real daemon.

The models are tiny and randomly initialised from their configs; the counts each test expects come
from its own hooks on the routers, not from the watcher.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

try:
    import torch
    import transformers  # noqa: F401
except ImportError as error:  # a missing dependency fails the run, it never skips it
    raise ImportError(f"{error}: the client's tests run in the environment `scripts/install-deps test` makes "
                      "(.venv); run them with `scripts/test-adopt` or `.venv/bin/python -m pytest`") from error

import tiny_moe
from conftest import CLIENT_ROOT, StubServer
from moe_metricsd_client import MetricsClient
from moe_metricsd_client.torch import Router, load_balance_loss, watch


def step_counts(indices, experts):
    return torch.bincount(torch.cat([i.reshape(-1) for i in indices]), minlength=experts).tolist()


def layer_counts(daemon, name):
    return daemon.get_json("/v1/layers/" + name)["expert_token_counts"]


def train_step(model, optimizer, vocab, seed, micro_batches=1):
    for micro in range(micro_batches):
        ids = tiny_moe.batch(vocab, seed=seed * 10 + micro)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def history(daemon, name, last=10):
    return daemon.get_json(f"/v1/layers/{name}/history?last={last}&experts=1")["steps"]


@pytest.mark.parametrize("family", sorted(tiny_moe.FAMILIES))
def test_each_family_posts_what_its_routers_returned(daemon, family):
    model = tiny_moe.build(family)
    vocab = model.config.vocab_size
    recorder = tiny_moe.IndexRecorder(model)
    assert len(recorder.seen) == 2, recorder.seen.keys()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    client = MetricsClient(daemon.url, linger=0.05)
    watcher = watch(model, client, optimizer=optimizer, prefix=family + ".", worker="w0", start_step=5)
    assert watcher.layers == [family + "." + path for path in recorder.seen]
    expected = {name: [] for name in watcher.layers}
    # Step 6 accumulates gradients over two forward passes: both count in the step.
    micro = (1, 2, 1)
    for step, micro_batches in enumerate(micro):
        train_step(model, optimizer, vocab, step, micro_batches)
        for path, indices in recorder.take().items():
            assert len(indices) == micro_batches
            expected[family + "." + path].append(step_counts(indices, 8))
    assert watcher.close(20) and client.flush(20)
    assert watcher.stats.steps == 3 and watcher.stats.posted == 3 and watcher.stats.dropped == 0
    for name, per_step in expected.items():
        steps = history(daemon, name)
        assert [s["step"] for s in steps] == [5, 6, 7]
        assert [s["expert_token_counts"] for s in steps] == per_step
        assert [s["tokens"] for s in steps] == [4 * 16 * m for m in micro]
        assert all(s["workers"] == 1 and s["decisions"] == 1 for s in steps)
        summary = daemon.get_json("/v1/layers/" + name)
        assert summary["expert_token_counts"] == [sum(c) for c in zip(*per_step)]
        assert [w["worker"] for w in summary["workers"]["list"]] == ["w0"]
    recorder.remove()
    client.close()


def test_deepseek_v3_counts_the_group_limited_choice_not_a_top_k_of_the_logits(daemon):
    model = tiny_moe.build("deepseek_v3", seed=3)
    routers = tiny_moe.router_modules(model)
    with torch.no_grad():
        for _, router in routers:
            # Experts 0-3 form group 0; a large correction bias keeps every token in group 1.
            router.e_score_correction_bias[4:] = 10.0
    recorder = tiny_moe.IndexRecorder(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    client = MetricsClient(daemon.url, linger=0.05)
    watcher = watch(model, client, optimizer=optimizer, prefix="dsv3g.")
    train_step(model, optimizer, model.config.vocab_size, 0)
    assert watcher.close(20) and client.flush(20)
    logits = {path: list(v) for path, v in recorder.logits.items()}
    for path, indices in recorder.take().items():
        counts = layer_counts(daemon, "dsv3g." + path)
        assert counts == step_counts(indices, 8)
        assert sum(counts[:4]) == 0 and sum(counts[4:]) == 2 * 64
        naive = step_counts([torch.topk(l, 2, dim=-1).indices for l in logits[path]], 8)
        assert naive != counts  # a recomputation from the logits would have been wrong
    client.close()


def test_gradient_checkpointing_recomputation_is_not_counted_twice(daemon):
    model = tiny_moe.build("mixtral", seed=4)
    model.gradient_checkpointing_enable()
    recorder = tiny_moe.IndexRecorder(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    client = MetricsClient(daemon.url, linger=0.05)
    watcher = watch(model, client, optimizer=optimizer, prefix="ckpt.")
    train_step(model, optimizer, model.config.vocab_size, 0)
    assert watcher.close(20) and client.flush(20)
    for path, indices in recorder.take().items():
        assert len(indices) == 2  # the forward pass, and its recomputation during backward
        assert torch.equal(indices[0], indices[1])
        assert layer_counts(daemon, "ckpt." + path) == step_counts(indices[:1], 8)
    client.close()


def test_steps_workers_top_k_and_losses_in_what_is_posted(stub):
    model = tiny_moe.build("mixtral", seed=1)
    recorder = tiny_moe.IndexRecorder(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    client = MetricsClient(stub.url, linger=0.05, worker="host-a")
    watcher = watch(model, client, start_step=100)
    expected = []
    for step in range(3):
        train_step(model, optimizer, model.config.vocab_size, step)
        logits = {path: torch.cat(v) for path, v in recorder.logits.items()}
        indices = recorder.take()
        expected.append((indices, logits))
        watcher.step() if step < 2 else watcher.step(200)
    assert watcher.close(10)
    client.close()
    decisions = stub.all_decisions()
    assert sorted({d["step"] for d in decisions}) == [100, 101, 200]
    assert len(decisions) == 6
    # No torch.distributed and no worker= given: the client's own worker.
    assert all(d["worker"] == "host-a" for d in decisions)
    for d in decisions:
        step = {100: 0, 101: 1, 200: 2}[d["step"]]
        indices, logits = expected[step]
        path = d["layer"]
        assert d["top_k"] == 2 and d["total_tokens"] == 64 and d["tokens_dropped"] == 0
        assert d["tokens_per_expert"] == step_counts(indices[path], 8)
        # Independent formulas: Switch's loss over k x T assignments, ST-MoE's z-loss.
        probs = logits[path].softmax(dim=-1).mean(dim=0)
        fraction = torch.tensor(d["tokens_per_expert"], dtype=torch.float64) / (64 * 2)
        assert math.isclose(d["load_balance_loss"], 8 * float((fraction * probs.double()).sum()), rel_tol=1e-5)
        z = torch.logsumexp(logits[path].double(), dim=-1).pow(2).mean()
        assert math.isclose(d["router_z_loss"], float(z), rel_tol=1e-5)


def test_load_balance_loss_is_one_for_a_uniform_router():
    assert math.isclose(load_balance_loss([4, 4, 4, 4], [2.0, 2.0, 2.0, 2.0], 8, 2), 1.0)
    assert math.isclose(load_balance_loss([16, 0, 0, 0], [8.0, 0, 0, 0], 8, 2), 4.0)


class ForbiddenOnTrainingThread:
    """Makes the host-synchronising tensor methods raise on one thread (other threads pass)."""

    NAMES = ("item", "tolist", "numpy", "cpu", "to")

    def __init__(self):
        self.thread = threading.get_ident()
        self.saved = {}
        self.calls = []

    def __enter__(self):
        for name in self.NAMES:
            original = getattr(torch.Tensor, name)
            self.saved[name] = original

            def guard(tensor, *args, _name=name, _original=original, **kwargs):
                if threading.get_ident() == self.thread and self._blocking(_name, tensor, args, kwargs):
                    self.calls.append(_name)
                    raise AssertionError(f"Tensor.{_name} called on the training thread")
                return _original(tensor, *args, **kwargs)

            setattr(torch.Tensor, name, guard)
        return self

    @staticmethod
    def _blocking(name, tensor, args, kwargs):
        if name != "to":
            return True
        if kwargs.get("non_blocking") or (len(args) > 1 and args[1] is True):
            return False
        targets = list(args) + [kwargs.get("device")]
        # A copy to the host; .to(dtype) or .to(same device) on an accelerator does not wait.
        return any(str(t) == "cpu" or (isinstance(t, torch.device) and t.type == "cpu") for t in targets
                   if isinstance(t, (str, torch.device))) and tensor.device.type != "cpu"

    def __exit__(self, *exc):
        for name, original in self.saved.items():
            setattr(torch.Tensor, name, original)


def test_the_training_thread_never_synchronises(stub):
    model = tiny_moe.build("qwen3_moe", seed=2)
    # SGD: Adam's single-tensor CPU step reads its own step counter with .item().
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    client = MetricsClient(stub.url, linger=0.05)
    watcher = watch(model, client, optimizer=optimizer)
    ids = tiny_moe.batch(model.config.vocab_size)
    with ForbiddenOnTrainingThread() as guard:
        for _ in range(3):
            # Forward, backward and the optimizer step (which ends the watcher's step) all run
            # with item/tolist/numpy/cpu and blocking .to("cpu") raising.
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    assert guard.calls == []
    assert watcher.close(10) and client.flush(10)
    assert watcher.stats.posted == 3
    assert len(stub.all_decisions()) == 6
    client.close()


def test_the_guard_catches_a_synchronising_hook():
    model = tiny_moe.build("olmoe")
    path, router = tiny_moe.router_modules(model)[0]
    router.register_forward_hook(lambda m, i, o: o[2].flatten().tolist())
    ids = tiny_moe.batch(model.config.vocab_size)
    with ForbiddenOnTrainingThread(), pytest.raises(AssertionError, match="tolist"):
        model(input_ids=ids)


def test_a_dead_daemon_costs_dropped_steps_not_training_time():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    model = tiny_moe.build("mixtral")
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    client = MetricsClient(url, max_retries=2, backoff_initial=0.05, backoff_max=0.1, timeout=1)
    watcher = watch(model, client, optimizer=optimizer)
    started = time.monotonic()
    for step in range(5):
        train_step(model, optimizer, model.config.vocab_size, step)
    trained = time.monotonic() - started
    assert watcher.flush(30)
    stats = watcher.stats
    assert stats.steps == 5 and stats.dropped == 5 and stats.posted == 0 and stats.pending == 0
    assert client.stats.dropped == 10 and client.stats.sent == 0
    assert watcher.close(5)
    client.close()
    assert trained < 30


def test_steps_beyond_max_pending_are_dropped_while_the_daemon_is_slow(stub):
    release = threading.Event()

    def slow(request):
        release.wait(20)
        return 200, "{}"

    stub.responder = slow
    model = tiny_moe.build("olmoe")
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    client = MetricsClient(stub.url, linger=0.01)
    watcher = watch(model, client, optimizer=optimizer, max_pending_steps=2)
    for step in range(6):
        train_step(model, optimizer, model.config.vocab_size, step)
    deadline = time.monotonic() + 10
    while watcher.stats.dropped < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    assert watcher.close(20)
    stats = watcher.stats
    assert stats.steps == 6 and stats.posted == 2 and stats.dropped == 4
    client.close()


def test_steps_without_a_free_host_buffer_are_dropped_and_the_rest_counted_right(daemon, monkeypatch):
    # The poster thread waits on each step's device-to-host copy (on CUDA, its event). Held
    # there, as behind a slow copy, the two buffers stay in use: the steps that end meanwhile
    # find none free, are dropped at once, and the training thread does not wait.
    from moe_metricsd_client import torch as watcher_module

    release = threading.Event()
    waiting = threading.Event()
    real_wait = watcher_module._Slot.wait

    def slow_wait(slot):
        waiting.set()
        release.wait(20)
        real_wait(slot)

    monkeypatch.setattr(watcher_module._Slot, "wait", slow_wait)
    model = tiny_moe.build("qwen2_moe")
    vocab = model.config.vocab_size
    recorder = tiny_moe.IndexRecorder(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    client = MetricsClient(daemon.url, linger=0.05)
    watcher = watch(model, client, optimizer=optimizer, prefix="nobuf.", worker="w0", buffers=2)
    names = {path: "nobuf." + path for path in recorder.seen}
    expected = {name: [0] * 8 for name in names.values()}
    for step in range(6):
        train_step(model, optimizer, vocab, step)
        taken = recorder.take()
        if step == 0:
            assert waiting.wait(10), "the poster took the first step"
        if step < 2:  # the two steps that got a buffer
            for path, indices in taken.items():
                counts = step_counts(indices, 8)
                expected[names[path]] = [a + b for a, b in zip(expected[names[path]], counts)]
    assert watcher.stats.dropped == 4 and watcher.stats.posted == 0
    release.set()
    assert watcher.close(20) and client.flush(20)
    stats = watcher.stats
    assert stats.steps == 6 and stats.posted == 2 and stats.dropped == 4 and stats.pending == 0
    for name, counts in expected.items():
        assert layer_counts(daemon, name) == counts
        assert [s["step"] for s in history(daemon, name)] == [0, 1]
    client.close()


def test_a_router_of_ones_own_through_a_function(daemon):
    class TopKRouter(torch.nn.Module):
        def __init__(self, hidden, experts, k):
            super().__init__()
            self.gate = torch.nn.Linear(hidden, experts, bias=False)
            self.experts, self.k = experts, k

        def forward(self, x):
            logits = self.gate(x)
            weights, ids = logits.softmax(dim=-1).topk(self.k, dim=-1)
            return ids, weights, logits

    torch.manual_seed(0)
    model = torch.nn.Sequential(TopKRouter(16, 6, 1), torch.nn.Identity())
    model.add_module("second", TopKRouter(16, 6, 3))

    def routers(path, module):
        if isinstance(module, TopKRouter):
            return Router(module.experts, module.k, lambda inputs, out: (out[0], out[2]))
        return None

    client = MetricsClient(daemon.url, linger=0.05)
    watcher = watch(model, client, routers=routers, prefix="own.")
    assert watcher.layers == ["own.0", "own.second"]
    x = torch.randn(40, 16)
    ids0 = model[0](x)[0]
    ids1 = model.second(x)[0]
    watcher.step()
    with watcher.paused():
        model[0](x)  # not counted
    watcher.step()  # nothing ran: an empty step, nothing posted
    assert watcher.close(10) and client.flush(10)
    assert layer_counts(daemon, "own.0") == step_counts([ids0], 6)
    assert layer_counts(daemon, "own.second") == step_counts([ids1], 6)
    assert watcher.stats.posted == 1 and watcher.stats.empty == 1
    client.close()


def test_a_model_without_routers_is_refused_at_once():
    with pytest.raises(ValueError, match="no MoE router"):
        watch(torch.nn.Linear(2, 2), MetricsClient("http://127.0.0.1:9"))


def test_long_module_paths_become_valid_distinct_layer_names(stub):
    from moe_metricsd_client.torch import _layer_name

    long_a = "model." + "very_long_block_name." * 5 + "layers.1.mlp.gate"
    long_b = "model." + "very_long_block_name." * 5 + "layers.2.mlp.gate"
    a, b = _layer_name("", long_a), _layer_name("", long_b)
    assert len(a) == 64 and len(b) == 64 and a != b
    assert _layer_name("x/", "a b") == "x_a_b"
    assert _layer_name("", "") == "root"


def test_two_processes_under_gloo_post_as_two_workers_of_the_same_steps(daemon, tmp_path):
    script = CLIENT_ROOT / "tests" / "distributed_worker.py"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(CLIENT_ROOT), str(CLIENT_ROOT / "tests")]),
               MOE_METRICSD_URL=daemon.url, MOE_OUT=str(tmp_path), OMP_NUM_THREADS="1",
               GLOO_SOCKET_IFNAME="lo")  # the ranks talk over the loopback interface only
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script)],
        env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["stats"]["posted"] for r in reports] == [3, 3]
    for name in reports[0]["counts"]:
        # The daemon's per-step history: each step reported by both ranks, its counts their sum.
        steps = history(daemon, name)
        assert [s["step"] for s in steps] == [0, 1, 2]
        assert all(s["workers"] == 2 and s["decisions"] == 2 and s["complete"] for s in steps)
        for step, s in enumerate(steps):
            assert s["expert_token_counts"] == [a + b for a, b in zip(reports[0]["counts"][name][step],
                                                                       reports[1]["counts"][name][step])]
        summary = daemon.get_json("/v1/layers/" + name)
        assert [w["worker"] for w in summary["workers"]["list"]] == ["0", "1"]
    # The ranks saw different data, so their counts differ: the daemon got two sets, not one twice.
    assert reports[0]["counts"] != reports[1]["counts"]


def test_the_example_trains_a_tiny_model_and_posts_every_layer(daemon):
    example = CLIENT_ROOT / "examples" / "watch_hf_moe.py"
    env = dict(os.environ, PYTHONPATH=str(CLIENT_ROOT))
    result = subprocess.run([sys.executable, str(example), "--url", daemon.url, "--steps", "3",
                             "--prefix", "example."], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "posted=3" in result.stdout, result.stdout
    names = [layer["layer"] for layer in daemon.get_json("/v1/layers")["layers"]
             if layer["layer"].startswith("example.")]
    assert len(names) >= 2
    for name in names:
        summary = daemon.get_json("/v1/layers/" + name)
        assert summary["total_routings"] == 3 and sum(summary["expert_token_counts"]) > 0


def test_indices_outside_the_experts_count_in_no_expert(stub):
    indices = torch.tensor([[[0, 3], [-1, 2]], [[4, 1], [3, 3]]])  # [batch, sequence, k], E = 4
    box = torch.nn.Identity()
    client = MetricsClient(stub.url, linger=0.05)
    watcher = watch(box, client, routers=lambda path, module: Router(4, 2, lambda i, o: (indices, None)))
    box(torch.zeros(1))
    watcher.step(9)
    assert watcher.close(10)
    client.close()
    (decision,) = stub.all_decisions()
    # -1 and 4 are nobody's; four tokens, no losses without logits.
    assert decision["tokens_per_expert"] == [1, 1, 1, 3] and decision["total_tokens"] == 4
    assert decision["step"] == 9 and "load_balance_loss" not in decision
