"""The client against a scriptable stdlib HTTP server: batching, formats, retries, drops."""

from __future__ import annotations

import json
import math
import socket
import threading

import pytest

from conftest import StubServer
from moe_metricsd_client import MetricsClient, make_decision, shard_index


class FakeTensor:
    """Stands in for a torch tensor: the client may only use .tolist()."""

    def __init__(self, values):
        self._values = values

    def tolist(self):
        return self._values

    def __iter__(self):  # a client that iterated instead of calling tolist() would be caught
        raise AssertionError("iterate through tolist(), not the tensor")


class FakeScalar:
    def __init__(self, value):
        self._value = value

    def item(self):
        return self._value


def fast_client(url, **kwargs):
    kwargs.setdefault("backoff_initial", 0.001)
    kwargs.setdefault("backoff_max", 0.01)
    kwargs.setdefault("timeout", 2.0)
    return MetricsClient(url, **kwargs)


def test_layers_of_one_step_travel_in_one_json_array(stub):
    client = fast_client(stub.url, worker="rank3", linger=0.5)
    for layer in range(8):
        assert client.record(f"layer.{layer}", [layer, 1, 2, 3], total_tokens=6 + layer, step=7)
    assert client.flush(10)
    client.close()
    assert len(stub.requests) == 1, [r.body for r in stub.requests]
    request = stub.requests[0]
    assert request.path == "/v1/decisions"
    assert request.headers["content-type"] == "application/json"
    body = json.loads(request.body)
    assert isinstance(body, list) and len(body) == 8
    assert body[5] == {"layer": "layer.5", "tokens_per_expert": [5, 1, 2, 3], "total_tokens": 11,
                       "tokens_dropped": 0, "worker": "rank3", "step": 7}
    assert client.stats.sent == 8 and client.stats.dropped == 0 and client.stats.queued == 0


def test_ndjson_mode_sends_one_decision_per_line(stub):
    client = fast_client(stub.url, ndjson=True, linger=0.5)
    client.record(0, [1, 2], total_tokens=3)
    client.record(1, [4, 0], total_tokens=4)
    client.close()
    assert [r.headers["content-type"] for r in stub.requests] == ["application/x-ndjson"]
    lines = stub.requests[0].body.decode().splitlines()
    assert [json.loads(line)["layer"] for line in lines] == ["0", "1"]
    assert stub.requests[0].body.endswith(b"\n")


def test_max_batch_bounds_a_request(stub):
    client = fast_client(stub.url, max_batch=3, linger=0.5)
    for layer in range(7):
        client.record(layer, [1, 1], total_tokens=2)
    client.close()
    sizes = [len(r.decisions()) for r in stub.requests]
    assert sum(sizes) == 7 and max(sizes) <= 3


def test_tensors_and_scalars_are_converted_without_torch(stub):
    client = fast_client(stub.url)
    counts = FakeTensor([3, 0, 5, 0])
    client.record("moe", counts, total_tokens=FakeScalar(4), tokens_dropped=FakeTensor(1),
                  load_balance_loss=FakeScalar(0.25), router_z_loss=FakeTensor(float("nan")),
                  auxiliary_loss=float("inf"), top_k=2, latency_ms=FakeScalar(1.5))
    client.close()
    (decision,) = stub.all_decisions()
    assert decision["tokens_per_expert"] == [3, 0, 5, 0]
    assert decision["total_tokens"] == 4 and decision["tokens_dropped"] == 1
    assert decision["load_balance_loss"] == 0.25
    # serde writes a non-finite float as null; so do we.
    assert decision["router_z_loss"] is None and decision["auxiliary_loss"] is None
    assert "null" in stub.requests[0].body.decode()
    assert decision["top_k"] == 2 and decision["latency_ms"] == 1.5


def test_total_tokens_defaults_to_assignments_over_top_k():
    assert make_decision(0, [4, 2, 2, 0], top_k=2)["total_tokens"] == 4
    assert make_decision(0, [4, 2, 2, 0])["total_tokens"] == 8
    assert "load_balance_loss" not in make_decision(0, [1])


@pytest.mark.parametrize("kwargs", [
    dict(tokens_per_expert=[1, -1], total_tokens=2),
    dict(tokens_per_expert=[1, 2.5], total_tokens=2),
    dict(tokens_per_expert=[], total_tokens=0),
    dict(tokens_per_expert="abc", total_tokens=1),
    dict(tokens_per_expert=[1, 1], total_tokens=2, tokens_dropped=3),
    dict(tokens_per_expert=[1, 1], total_tokens=2, latency_ms=float("nan")),
    dict(tokens_per_expert=[1, 1], total_tokens=2, latency_ms=-1),
    dict(tokens_per_expert=[1, 1], total_tokens=2, step=object()),
])
def test_invalid_values_are_counted_never_raised(stub, kwargs):
    client = fast_client(stub.url)
    assert client.record("layer", **kwargs) is False
    client.close()
    assert client.stats.invalid == 1
    assert stub.requests == []


def test_retries_with_backoff_until_the_daemon_answers(stub):
    answers = iter([(503, '{"error":"busy"}'), (503, '{"error":"busy"}')])
    stub.responder = lambda r: next(answers, (202, '{"accepted": 1}'))
    client = fast_client(stub.url)
    client.record("l", [1, 1], total_tokens=2)
    assert client.flush(10)
    client.close()
    assert len(stub.requests) == 3
    assert client.stats.retries == 2 and client.stats.sent == 1 and client.stats.dropped == 0


def test_gives_up_after_max_retries_and_counts_the_drop(stub):
    stub.responder = lambda r: (503, '{"error":"busy"}')
    client = fast_client(stub.url, max_retries=3)
    client.record("l", [1, 1], total_tokens=2)
    assert client.flush(10)
    client.close()
    assert len(stub.requests) == 4
    assert client.stats.dropped == 1 and client.stats.sent == 0


def test_unreachable_daemon_never_raises_into_the_caller():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = fast_client(f"http://127.0.0.1:{port}", max_retries=2)
    for step in range(5):
        assert client.record("l", [1, 2, 3], total_tokens=6, step=step) is True
    assert client.flush(10)
    client.close()
    stats = client.stats
    assert stats.dropped == 5 and stats.sent == 0 and stats.retries >= 2


def test_a_full_queue_drops_instead_of_blocking(stub):
    release = threading.Event()

    def slow(request):
        release.wait(10)
        return 202, "{}"

    stub.responder = slow
    client = fast_client(stub.url, max_queue=2, max_batch=1, linger=0)
    results = [client.record("l", [1], total_tokens=1) for _ in range(10)]
    release.set()
    client.close()
    # One decision may be in flight and two queued; everything else is dropped at once.
    assert results.count(True) <= 3 and results.count(False) >= 7
    assert client.stats.dropped == results.count(False)
    assert client.stats.sent == results.count(True)


def test_a_refused_batch_is_split_to_isolate_the_bad_decision(stub):
    def judge(request):
        if any(d["layer"] == "bad" for d in request.decisions()):
            return 409, '{"error":"expert count conflict","field":"tokens_per_expert"}'
        return 202, '{"accepted": %d}' % len(request.decisions())

    stub.responder = judge
    client = fast_client(stub.url, linger=0.5)
    for name in ["a", "b", "bad", "c", "d", "e"]:
        client.record(name, [1, 1], total_tokens=2)
    client.close()
    accepted = [d["layer"] for r in stub.requests if not any(x["layer"] == "bad" for x in r.decisions())
                for d in r.decisions()]
    assert sorted(accepted) == ["a", "b", "c", "d", "e"]
    assert client.stats.sent == 5 and client.stats.rejected == 1


def test_send_accepts_a_prepared_dict_and_adds_the_worker(stub):
    client = fast_client(stub.url, worker=4)
    decision = {"layer": "x", "expert_capacities": [2, 2], "total_tokens": 2, "tokens_dropped": 0,
                "load_balance_loss": 0.5, "router_z_loss": None, "auxiliary_loss": 0.5}
    assert client.send(decision)
    client.close()
    (sent,) = stub.all_decisions()
    assert sent == dict(decision, worker="4")
    assert "worker" not in decision  # the caller's dict is not modified


def test_close_is_idempotent_and_later_records_are_dropped(stub):
    client = fast_client(stub.url)
    assert client.close()
    assert client.close()
    assert client.record("l", [1], total_tokens=1) is False
    assert client.stats.dropped == 1


def test_non_finite_values_never_produce_invalid_json(stub):
    client = fast_client(stub.url)
    client.send({"layer": "x", "tokens_per_expert": [1], "total_tokens": 1, "load_balance_loss": math.nan})
    client.close()
    assert stub.requests == []
    assert client.stats.invalid == 1


def test_a_keep_alive_connection_closed_by_the_server_is_reopened_without_retry(stub):
    stub.close_silently = True
    client = fast_client(stub.url, linger=0)
    for step in range(3):
        client.record("l", [1, 1], total_tokens=2, step=step)
        assert client.flush(10)
    client.close()
    assert [d["step"] for d in stub.all_decisions()] == [0, 1, 2]
    assert client.stats.sent == 3 and client.stats.retries == 0 and client.stats.dropped == 0


def test_shard_index_is_fnv1a_64_of_the_utf8_name_modulo_the_daemons():
    # FNV-1a 64-bit reference values (the offset basis for "", and the published test vectors).
    assert shard_index("", 1 << 64) == 0xCBF29CE484222325
    assert shard_index("a", 1 << 64) == 0xAF63DC4C8601EC8C
    assert shard_index("foobar", 1 << 64) == 0x85944171F73967E8
    assert shard_index("foobar", 3) == 0x85944171F73967E8 % 3
    # An integer layer is its decimal name.
    assert shard_index(7, 5) == shard_index("7", 5)
    assert {shard_index(f"model.layers.{i}.mlp.gate", 2) for i in range(16)} == {0, 1}


def test_several_urls_split_each_batch_by_layer(stub):
    other = StubServer()
    try:
        client = fast_client([stub.url, other.url], linger=0.5)
        layers = [f"model.layers.{i}.mlp.gate" for i in range(12)]
        for name in layers:
            assert client.record(name, [1, 1], total_tokens=2, step=3)
        assert client.flush(10)
        client.close()
        assert client.urls == [stub.url, other.url]
        for index, server in enumerate((stub, other)):
            got = [d["layer"] for d in server.all_decisions()]
            assert sorted(got) == sorted(n for n in layers if shard_index(n, 2) == index)
            assert len(server.requests) == 1  # one request per daemon for the step
        assert client.stats.sent == 12
    finally:
        other.close()


def test_a_comma_separated_string_names_several_daemons(stub):
    client = fast_client(stub.url + ", " + stub.url)
    assert client.urls == [stub.url, stub.url]
    client.close()
    with pytest.raises(ValueError):
        MetricsClient(" , ")


def test_on_done_reports_how_each_decision_ended(stub):
    stub.responder = lambda r: ((409, '{"error":"conflict"}') if any(d["layer"] == "bad" for d in r.decisions())
                                else (200, "{}"))
    outcomes = {}
    client = fast_client(stub.url, linger=0.2)
    for name in ("a", "bad", "b"):
        client.record(name, [1, 1], total_tokens=2, on_done=lambda o, n=name: outcomes.__setitem__(n, o))
    client.record("c", [1, -1], total_tokens=2, on_done=lambda o: outcomes.__setitem__("c", o))
    client.close()
    assert client.record("d", [1], total_tokens=1, on_done=lambda o: outcomes.__setitem__("d", o)) is False
    assert outcomes == {"a": "sent", "b": "sent", "bad": "rejected", "c": "invalid", "d": "dropped"}


def test_expert_demand_is_sent_only_when_given_and_checked():
    assert "expert_demand" not in make_decision(0, [2, 1], total_tokens=3)
    assert make_decision(0, [2, 1], total_tokens=3, expert_demand=FakeTensor([4, 1]))["expert_demand"] == [4, 1]
    for bad in ([1, 1], [4], [4, 1, 0], [4, -1], "ab"):
        with pytest.raises(ValueError):
            make_decision(0, [2, 1], total_tokens=3, expert_demand=bad)
