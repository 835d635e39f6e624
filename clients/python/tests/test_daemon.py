"""The client against the real moe-metricsd binary: what it sends is what the daemon counts."""

from __future__ import annotations

import json
import math

from conftest import Daemon, daemon_binary
from moe_metricsd_client import MetricsClient, shard_index


class FakeTensor:
    def __init__(self, values):
        self._values = values

    def tolist(self):
        return self._values


def summary(daemon, layer):
    return daemon.get_json("/v1/layers/" + layer)


def test_batched_layers_arrive_with_their_counts(daemon):
    steps = [
        {"py.a": [5, 3, 0, 0], "py.b": [1, 1, 1, 1], "py.c": [8, 0, 0, 0]},
        {"py.a": [2, 2, 2, 2], "py.b": [0, 4, 0, 4], "py.c": [4, 4, 0, 0]},
        {"py.a": [1, 0, 7, 0], "py.b": [2, 2, 2, 2], "py.c": [0, 0, 0, 8]},
    ]
    client = MetricsClient(daemon.url, worker="rank0", linger=0.2)
    for step, layers in enumerate(steps):
        for layer, counts in layers.items():
            assert client.record(layer, counts, total_tokens=8, tokens_dropped=step % 2, top_k=2,
                                 load_balance_loss=0.5 + step, router_z_loss=0.25, step=step)
    assert client.flush(20)
    client.close()
    assert client.stats.sent == 9 and client.stats.dropped == 0 and client.stats.rejected == 0
    # The three steps' layers travelled together, not one request per decision.
    assert client.stats.requests < 9
    for layer in ("py.a", "py.b", "py.c"):
        s = summary(daemon, layer)
        expected = [sum(step[layer][e] for step in steps) for e in range(4)]
        assert s["layer"] == layer and s["experts"] == 4
        assert s["total_routings"] == 3
        assert s["total_tokens"] == 24 and s["tokens_dropped"] == 1
        assert s["expert_token_counts"] == expected
        assert math.isclose(s["average_load_balance_loss"], 1.5)
        assert math.isclose(s["average_router_z_loss"], 0.25)


def test_ndjson_and_tensor_like_values(daemon):
    client = MetricsClient(daemon.url, ndjson=True, linger=0.2)
    client.record("py.ndjson.0", FakeTensor([3, 1]), total_tokens=FakeTensor(4), tokens_dropped=0)
    client.record("py.ndjson.1", FakeTensor([0, 4]), total_tokens=4, tokens_dropped=FakeTensor(0))
    client.close()
    assert client.stats.sent == 2
    assert summary(daemon, "py.ndjson.0")["expert_token_counts"] == [3, 1]
    s = summary(daemon, "py.ndjson.1")
    assert s["expert_token_counts"] == [0, 4]


def test_nan_loss_is_counted_not_averaged(daemon):
    client = MetricsClient(daemon.url)
    client.record("py.nan", [2, 2], total_tokens=4, load_balance_loss=0.5)
    client.record("py.nan", [2, 2], total_tokens=4, load_balance_loss=float("nan"))
    client.close()
    assert client.stats.sent == 2
    s = summary(daemon, "py.nan")
    assert s["nonfinite_losses"] == 1
    assert math.isclose(s["average_load_balance_loss"], 0.5)


def test_a_conflicting_decision_is_rejected_alone(daemon):
    client = MetricsClient(daemon.url, linger=0.2)
    client.record("py.conflict", [1, 1, 1, 1], total_tokens=4)
    assert client.flush(20)
    # The same step carries a good decision for another layer and a 5-expert one for a 4-expert
    # layer: the daemon refuses the batch as a whole, the client splits it and only the bad one
    # is lost.
    client.record("py.neighbour", [2, 2], total_tokens=4)
    client.record("py.conflict", [1, 1, 1, 1, 1], total_tokens=5)
    client.close()
    assert client.stats.rejected == 1 and client.stats.sent == 2
    s = summary(daemon, "py.conflict")
    assert s["experts"] == 4 and s["total_routings"] == 1
    assert summary(daemon, "py.neighbour")["total_routings"] == 1


def test_daemon_answer_to_a_refused_decision_names_the_field(daemon):
    status, body = daemon.post("/v1/decisions", json.dumps(
        {"layer": "py.bad", "tokens_per_expert": [1, 1], "total_tokens": 1, "tokens_dropped": 2}).encode())
    assert status == 422, body
    assert json.loads(body)["field"] == "tokens_dropped"


def test_a_guarded_daemon_takes_the_token_from_the_client_or_the_environment(tmp_path, monkeypatch):
    from conftest import Daemon, daemon_binary

    token_file = tmp_path / "token"
    token_file.write_text("worker-token-123\n")
    guarded = Daemon(daemon_binary(), ["--auth-token-file", str(token_file)])
    try:
        monkeypatch.delenv("MOE_METRICSD_AUTH_TOKEN", raising=False)
        with MetricsClient(guarded.url, max_retries=0) as anonymous:
            anonymous.record("guarded.l", [1, 1], total_tokens=2)
            assert anonymous.flush(10)
        assert anonymous.stats.rejected == 1 and anonymous.stats.sent == 0

        with MetricsClient(guarded.url, token="wrong", max_retries=0) as wrong:
            wrong.record("guarded.l", [1, 1], total_tokens=2)
            assert wrong.flush(10)
        assert wrong.stats.rejected == 1 and wrong.stats.sent == 0

        with MetricsClient(guarded.url, token=" worker-token-123 ") as given:
            given.record("guarded.l", [2, 0], total_tokens=2)
            assert given.flush(10)
        assert given.stats.sent == 1

        monkeypatch.setenv("MOE_METRICSD_AUTH_TOKEN", "worker-token-123")
        with MetricsClient(guarded.url) as from_environment:
            from_environment.record("guarded.l", [0, 2], total_tokens=2)
            assert from_environment.flush(10)
        assert from_environment.stats.sent == 1

        # Only the two accepted decisions were counted.
        assert guarded.get_json("/v1/layers/guarded.l")["expert_token_counts"] == [2, 2]
    finally:
        guarded.stop()


def test_two_daemons_each_hold_their_layers_from_every_worker():
    daemons = [Daemon(daemon_binary()), Daemon(daemon_binary())]
    try:
        layers = [f"shard.{i}" for i in range(10)]
        owner = {name: shard_index(name, 2) for name in layers}
        assert set(owner.values()) == {0, 1}, "the names should spread over both daemons"
        urls = [d.url for d in daemons]
        workers = [MetricsClient(urls, worker=f"rank{r}", linger=0.1) for r in range(2)]
        for step in range(3):
            for rank, client in enumerate(workers):
                for i, name in enumerate(layers):
                    client.record(name, [rank + 1, i, step], total_tokens=20, step=step)
        for client in workers:
            assert client.close(20)
            assert client.stats.sent == 30 and client.stats.rejected == 0 and client.stats.dropped == 0
        for index, daemon in enumerate(daemons):
            held = sorted(layer["layer"] for layer in daemon.get_json("/v1/layers")["layers"])
            assert held == sorted(n for n in layers if owner[n] == index)
        for i, name in enumerate(layers):
            s = daemons[owner[name]].get_json("/v1/layers/" + name)
            assert s["expert_token_counts"] == [3 * (1 + 2), 6 * i, 2 * (0 + 1 + 2)]
            assert [w["worker"] for w in s["workers"]["list"]] == ["rank0", "rank1"]
            assert [w["decisions"] for w in s["workers"]["list"]] == [3, 3]
    finally:
        for daemon in daemons:
            daemon.stop()


def test_the_daemon_counts_expert_demand_as_sent(daemon):
    client = MetricsClient(daemon.url, linger=0.05)
    assert client.record("py.demand", [3, 1], total_tokens=4, top_k=1, expert_demand=[4, 1], step=0)
    assert client.close(10)
    assert client.stats.sent == 1 and client.stats.rejected == 0
    s = summary(daemon, "py.demand")
    assert s["expert_token_counts"] == [3, 1]
    assert s["expert_demand"] == [4, 1] and s["expert_overflow"] == [1, 0]
