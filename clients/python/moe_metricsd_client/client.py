"""A non-blocking client that posts MoE routing decisions to moe-metricsd.

The training loop only converts its numbers to plain Python values and puts a dict on a bounded
queue; a background thread batches whatever is queued (typically every layer of one step) into one
``POST /v1/decisions`` request, retries with exponential backoff when the daemon is unreachable or
busy, and counts what it had to give up on. Nothing here raises into the caller: a full queue, a bad
value or a dead daemon becomes a counter in :attr:`MetricsClient.stats` and a rate-limited warning.
"""

from __future__ import annotations

import atexit
import http.client
import json
import logging
import math
import os
import queue
import random
import threading
import time
import urllib.parse
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Union

__all__ = ["MetricsClient", "ClientStats", "make_decision", "shard_index"]

log = logging.getLogger("moe_metricsd_client")

# Statuses worth retrying: the daemon (or a proxy in front of it) is busy or restarting. Any other
# 4xx means the data itself was refused and sending it again would be refused again.
_RETRYABLE = frozenset({408, 425, 429, 500, 502, 503, 504, 507})
# A batch refused as a whole (all or nothing) is split to find the one bad decision.
_SPLITTABLE = frozenset({400, 409, 413, 422})

_STOP = object()


class ClientStats(NamedTuple):
    """Counters since the client started.

    ``dropped`` counts decisions lost on our side: the queue was full, the daemon stayed
    unreachable through every retry, or the client was closed before they could be sent.
    ``rejected`` counts decisions the daemon answered with an error (invalid values, an expert
    count that conflicts with the layer's): fix the caller, not the network.
    ``invalid`` counts calls whose arguments could not be turned into a decision at all.
    """

    enqueued: int
    sent: int
    dropped: int
    rejected: int
    invalid: int
    requests: int
    retries: int
    queued: int


def _plain(value: Any) -> Any:
    """Turns a tensor, numpy value or nested sequence into plain Python values."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    elif hasattr(value, "item") and not isinstance(value, (list, tuple, dict)):
        value = value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _count(value: Any, name: str) -> int:
    value = _plain(value)
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, not a bool")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"{name} must be a whole number, got {value!r}")
        value = int(value)
    if not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be non-negative, got {value}")
    return value


def _loss(value: Any) -> Optional[float]:
    """A loss as JSON wants it: a finite float, or None (null) for NaN and infinity.

    serde_json writes a non-finite f32 as null; the daemon counts such a loss as non-finite and
    keeps it out of the averages, so a diverging run stays visible.
    """
    value = float(_plain(value))
    return value if math.isfinite(value) else None


def make_decision(
    layer: Union[str, int],
    tokens_per_expert: Any,
    total_tokens: Any = None,
    tokens_dropped: Any = 0,
    load_balance_loss: Any = None,
    router_z_loss: Any = None,
    auxiliary_loss: Any = None,
    *,
    worker: Union[str, int, None] = None,
    step: Any = None,
    top_k: Any = None,
    expert_capacity: Any = None,
    capacity_factor: Any = None,
    latency_ms: Any = None,
    expert_assignments: Any = None,
    expert_demand: Any = None,
) -> Dict[str, Any]:
    """Builds the JSON object of one decision (torsh's RoutingDecision fields plus the envelope).

    ``tokens_per_expert`` is a list of per-expert token counts or anything with ``.tolist()``,
    e.g. ``torch.bincount(topk_ids.flatten(), minlength=num_experts)``. When ``total_tokens`` is
    omitted it is the sum of the counts divided by ``top_k`` (each token goes to k experts).
    Losses left as None are not sent; a NaN or infinite loss is sent as null.
    ``expert_demand`` is optional: per expert, the tokens the router asked for before capacity
    clipping (same length as the counts, each at least the expert's served count); it is sent
    only when given.
    Raises ValueError for values the daemon would refuse; :meth:`MetricsClient.record` turns that
    into a counter instead.
    """
    counts_raw = _plain(tokens_per_expert)
    if not isinstance(counts_raw, list) or not counts_raw:
        raise ValueError("tokens_per_expert must be a non-empty sequence of counts")
    counts = [_count(c, f"tokens_per_expert[{i}]") for i, c in enumerate(counts_raw)]
    k = _count(top_k, "top_k") if top_k is not None else None
    if total_tokens is None:
        total = sum(counts) // (k or 1)
    else:
        total = _count(total_tokens, "total_tokens")
    dropped = _count(tokens_dropped, "tokens_dropped")
    if dropped > total:
        raise ValueError(f"tokens_dropped ({dropped}) exceeds total_tokens ({total})")
    decision: Dict[str, Any] = {
        "layer": str(_plain(layer)),
        "tokens_per_expert": counts,
        "total_tokens": total,
        "tokens_dropped": dropped,
    }
    for key, value in (
        ("load_balance_loss", load_balance_loss),
        ("router_z_loss", router_z_loss),
        ("auxiliary_loss", auxiliary_loss),
    ):
        if value is not None:
            decision[key] = _loss(value)
    if worker is not None:
        decision["worker"] = str(_plain(worker))
    if step is not None:
        decision["step"] = _count(step, "step")
    if k is not None:
        decision["top_k"] = k
    if expert_capacity is not None:
        decision["expert_capacity"] = _count(expert_capacity, "expert_capacity")
    if capacity_factor is not None:
        factor = float(_plain(capacity_factor))
        if not math.isfinite(factor) or factor <= 0:
            raise ValueError(f"capacity_factor must be finite and positive, got {factor!r}")
        decision["capacity_factor"] = factor
    if latency_ms is not None:
        latency = float(_plain(latency_ms))
        if not math.isfinite(latency) or latency < 0:
            raise ValueError(f"latency_ms must be finite and non-negative, got {latency!r}")
        decision["latency_ms"] = latency
    if expert_assignments is not None:
        decision["expert_assignments"] = _plain(expert_assignments)
    if expert_demand is not None:
        demand_raw = _plain(expert_demand)
        if not isinstance(demand_raw, list) or len(demand_raw) != len(counts):
            raise ValueError(f"expert_demand must be a sequence of {len(counts)} counts, one per expert")
        demand = [_count(d, f"expert_demand[{i}]") for i, d in enumerate(demand_raw)]
        for i, (asked, served) in enumerate(zip(demand, counts)):
            if asked < served:
                raise ValueError(f"expert_demand[{i}] ({asked}) is below the expert's served count ({served})")
        decision["expert_demand"] = demand
    return decision


class _RateLimitedLog:
    """Logs the first problem of each kind, then at most one line per interval."""

    def __init__(self, interval: float = 60.0) -> None:
        self._interval = interval
        self._last: Dict[str, float] = {}
        self._lock = threading.Lock()

    def warning(self, kind: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self._interval:
                return
            self._last[kind] = now
        log.warning(message, *args)


def shard_index(layer: Union[str, int], shards: int) -> int:
    """The daemon (index into the client's URLs) that receives ``layer``.

    FNV-1a 64-bit of the layer name's UTF-8 bytes, modulo the number of daemons: stable across
    processes, runs and languages (Python's own ``hash`` is salted per process), so every worker
    sends a given layer to the same daemon, which then sees all of that layer's decisions.
    """
    value = 0xCBF29CE484222325
    for byte in str(layer).encode("utf-8"):
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value % shards


def _split_urls(url: Union[str, Sequence[str]]) -> List[str]:
    urls = [u.strip() for u in url.split(",")] if isinstance(url, str) else [str(u).strip() for u in url]
    urls = [u for u in urls if u]
    if not urls:
        raise ValueError("at least one daemon URL is needed")
    return urls


# A callback told how a decision ended: "sent", "rejected" or "dropped".
Done = Callable[[str], None]


class MetricsClient:
    """Posts routing decisions to moe-metricsd from background threads.

    Arguments:
        url: the daemon's base URL, e.g. ``http://127.0.0.1:9477``; or several (a list, or one
            string separated by commas) to shard by layer: each layer goes to the daemon
            :func:`shard_index` picks, so each daemon holds every worker's decisions for its
            layers. Each daemon has its own sender thread, queue and connection.
        worker: sent as the ``worker`` field of every decision that does not name one
            (a rank or host name).
        max_queue: decisions held per daemon while it is slow; beyond that new ones are dropped
            (and counted) rather than blocking the training step or growing memory.
        max_batch: most decisions in one request.
        linger: seconds a sender waits after the first queued decision for more to arrive,
            so that the layers of one step travel together.
        ndjson: send ``application/x-ndjson`` instead of a JSON array.
        timeout: seconds for one HTTP request.
        token: the bearer token of a daemon started with ``auth_token_file`` (or
            ``MOE_METRICSD_AUTH_TOKEN``); sent as ``Authorization: Bearer TOKEN``. When not given,
            the ``MOE_METRICSD_AUTH_TOKEN`` environment variable is used if set, so one variable
            configures the daemon and its workers alike. Pass ``token=""`` to send none.
        max_retries: retries of a batch (after the first attempt) before it is dropped.
        backoff_initial, backoff_max: the exponential backoff between retries, in seconds
            (doubling, with jitter, capped; a ``Retry-After`` header is honoured up to the cap).
    """

    def __init__(
        self,
        url: Union[str, Sequence[str]] = "http://127.0.0.1:9477",
        *,
        worker: Union[str, int, None] = None,
        max_queue: int = 10000,
        max_batch: int = 256,
        linger: float = 0.01,
        ndjson: bool = False,
        timeout: float = 5.0,
        max_retries: int = 5,
        backoff_initial: float = 0.1,
        backoff_max: float = 10.0,
        token: Optional[str] = None,
    ) -> None:
        self._worker = None if worker is None else str(worker)
        if token is None:
            token = os.environ.get("MOE_METRICSD_AUTH_TOKEN")
        token = (token or "").strip()
        if any(c in token for c in "\r\n"):
            raise ValueError("token must be one line")
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._outstanding = 0
        self._counts = dict(enqueued=0, sent=0, dropped=0, rejected=0, invalid=0, requests=0, retries=0)
        self._closed = False
        self._warn = _RateLimitedLog()
        self._senders = [
            _Sender(self, u, authorization="Bearer " + token if token else None,
                    max_queue=max(1, int(max_queue)), max_batch=max(1, int(max_batch)),
                    linger=max(0.0, float(linger)), ndjson=bool(ndjson), timeout=float(timeout),
                    max_retries=max(0, int(max_retries)), backoff_initial=float(backoff_initial),
                    backoff_max=float(backoff_max))
            for u in _split_urls(url)
        ]
        for sender in self._senders:
            sender.start()
        atexit.register(self._atexit)

    @property
    def urls(self) -> List[str]:
        """The daemons' base URLs, in the order :func:`shard_index` counts them."""
        return [s.url for s in self._senders]

    # The training loop's side: cheap, never raises.

    def record(self, layer: Union[str, int], tokens_per_expert: Any, total_tokens: Any = None,
               tokens_dropped: Any = 0, load_balance_loss: Any = None, router_z_loss: Any = None,
               auxiliary_loss: Any = None, *, on_done: Optional[Done] = None, **envelope: Any) -> bool:
        """Queues one decision; see :func:`make_decision` for the arguments.

        Returns True when queued, False when it was dropped (queue full, client closed) or its
        values were invalid. Never raises. ``on_done``, when given, is called once with how the
        decision ended ("sent", "rejected", "dropped" or "invalid"), from a sender thread
        unless the decision never got queued.
        """
        try:
            envelope.setdefault("worker", self._worker)
            decision = make_decision(layer, tokens_per_expert, total_tokens, tokens_dropped,
                                     load_balance_loss, router_z_loss, auxiliary_loss, **envelope)
        except Exception as error:  # noqa: BLE001 - the training loop must never see it
            self._bump("invalid")
            self._warn.warning("invalid", "moe-metricsd: decision for layer %r not recorded: %s",
                               layer, error)
            _notify(on_done, "invalid")
            return False
        return self.send(decision, on_done=on_done)

    def send(self, decision: Dict[str, Any], *, on_done: Optional[Done] = None) -> bool:
        """Queues a decision that is already a JSON-ready dict (e.g. one written by serde).

        Returns True when queued, False when dropped. Never raises. ``on_done`` as in
        :meth:`record`.
        """
        if self._worker is not None and isinstance(decision, dict) and "worker" not in decision:
            decision = dict(decision, worker=self._worker)
        layer = decision.get("layer", "") if isinstance(decision, dict) else ""
        sender = self._senders[shard_index(layer, len(self._senders))] if len(self._senders) > 1 else self._senders[0]
        with self._lock:
            if self._closed:
                self._counts["dropped"] += 1
                queued = False
            else:
                queued = sender.offer((decision, on_done))
                if queued:
                    self._counts["enqueued"] += 1
                    self._outstanding += 1
                else:
                    self._counts["dropped"] += 1
        if not queued:
            if not self._closed:
                self._warn.warning("full", "moe-metricsd: queue full, dropping decisions (is %s up?)", sender.url)
            _notify(on_done, "dropped")
        return queued

    @property
    def stats(self) -> ClientStats:
        with self._lock:
            return ClientStats(queued=self._outstanding, **self._counts)

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Waits until every queued decision was sent, rejected or dropped; True if it happened."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._outstanding > 0:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def close(self, timeout: float = 5.0) -> bool:
        """Sends what is queued (waiting at most ``timeout`` seconds) and stops the threads.

        Decisions still queued after the timeout are counted as dropped. Returns True when
        everything queued was handled in time.
        """
        with self._lock:
            if self._closed:
                return self._outstanding == 0
            self._closed = True
        done = self.flush(timeout)
        for sender in self._senders:
            sender.stop()
        for sender in self._senders:
            sender.join(max(0.0, min(timeout, 1.0)) if not done else timeout)
        abandoned: List[Any] = []
        for sender in self._senders:
            abandoned.extend(sender.drain())
        with self._lock:
            if self._outstanding:
                self._counts["dropped"] += self._outstanding
                self._outstanding = 0
                self._idle.notify_all()
        for _, on_done in abandoned:
            _notify(on_done, "dropped")
        atexit.unregister(self._atexit)
        return done

    def __enter__(self) -> "MetricsClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _atexit(self) -> None:
        self.close(timeout=2.0)

    # Shared bookkeeping of the sender threads.

    def _bump(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def _finish(self, items: Sequence[Any], outcome: str) -> None:
        with self._idle:
            self._counts[outcome] += len(items)
            self._outstanding = max(0, self._outstanding - len(items))
            if self._outstanding == 0:
                self._idle.notify_all()
        for _, on_done in items:
            _notify(on_done, outcome)


def _notify(on_done: Optional[Done], outcome: str) -> None:
    if on_done is None:
        return
    try:
        on_done(outcome)
    except Exception as error:  # noqa: BLE001 - a caller's callback must not stop a sender
        log.warning("moe-metricsd: on_done callback failed: %r", error)


class _Sender:
    """One daemon's queue, thread and keep-alive connection."""

    def __init__(self, client: MetricsClient, url: str, *, authorization: Optional[str], max_queue: int,
                 max_batch: int, linger: float, ndjson: bool, timeout: float, max_retries: int,
                 backoff_initial: float, backoff_max: float) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"url must be http://host:port or https://host:port, got {url!r}")
        self.url = url
        self._client = client
        self._warn = client._warn
        self._scheme = parsed.scheme
        self._host = parsed.hostname
        self._port = parsed.port
        self._path = parsed.path.rstrip("/") + "/v1/decisions"
        self._authorization = authorization
        self._max_batch = max_batch
        self._linger = linger
        self._ndjson = ndjson
        self._timeout = timeout
        self._max_retries = max_retries
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._queue: "queue.Queue[Any]" = queue.Queue(maxsize=max_queue)
        self._closing = threading.Event()
        self._conn: Optional[http.client.HTTPConnection] = None
        self._thread = threading.Thread(target=self._run, name="moe-metricsd-client", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def offer(self, item: Any) -> bool:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            return False
        return True

    def stop(self) -> None:
        self._closing.set()
        try:
            self._queue.put_nowait(_STOP)
        except queue.Full:
            pass

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def drain(self) -> List[Any]:
        """What is still queued once the thread has stopped (or given up on): never sent."""
        items = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return items
            if item is not _STOP:
                items.append(item)

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get()
                if item is _STOP:
                    return
                batch = [item]
                deadline = time.monotonic() + self._linger
                stop = False
                while len(batch) < self._max_batch:
                    remaining = deadline - time.monotonic()
                    try:
                        nxt = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is _STOP:
                        stop = True
                        break
                    batch.append(nxt)
                self._deliver(batch)
                if stop:
                    return
            except Exception as error:  # noqa: BLE001 - keep the sender alive whatever happens
                self._warn.warning("internal", "moe-metricsd: sender error: %r", error)

    def _deliver(self, batch: List[Any]) -> None:
        """Sends a batch, splitting it when the daemon refuses it as a whole."""
        try:
            body = self._encode([decision for decision, _ in batch])
        except (TypeError, ValueError) as error:
            if len(batch) > 1:
                half = len(batch) // 2
                self._deliver(batch[:half])
                self._deliver(batch[half:])
            else:
                self._warn.warning("encode", "moe-metricsd: cannot encode decision: %s", error)
                self._client._finish(batch, "invalid")
            return
        status, reply = self._post(body)
        if status is None:
            self._client._finish(batch, "dropped")
        elif 200 <= status < 300:
            self._client._finish(batch, "sent")
        elif status in _SPLITTABLE and len(batch) > 1:
            half = len(batch) // 2
            self._deliver(batch[:half])
            self._deliver(batch[half:])
        else:
            hint = ""
            if status == 401:
                hint = (" (the daemon requires a bearer token: pass token= or set MOE_METRICSD_AUTH_TOKEN)"
                        if self._authorization is None else " (the daemon refused the token given)")
            self._warn.warning(f"status{status}", "moe-metricsd: daemon refused a decision (%d): %s%s",
                               status, reply[:300], hint)
            self._client._finish(batch, "rejected" if status < 500 else "dropped")

    def _encode(self, batch: Sequence[Dict[str, Any]]) -> bytes:
        # allow_nan=False: a NaN that slipped through would be invalid JSON; it raises instead.
        if self._ndjson:
            return "".join(json.dumps(d, allow_nan=False, separators=(",", ":")) + "\n"
                           for d in batch).encode()
        return json.dumps(list(batch), allow_nan=False, separators=(",", ":")).encode()

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self._timeout)
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001
                pass
            self._conn = None

    def _post(self, body: bytes) -> "tuple[Optional[int], str]":
        """POSTs with retries. Returns (status, body) of the final answer, or (None, reason)."""
        content_type = "application/x-ndjson" if self._ndjson else "application/json"
        headers = {"Content-Type": content_type, "Content-Length": str(len(body)),
                   "User-Agent": "moe-metricsd-client-python/0.1"}
        if self._authorization:
            headers["Authorization"] = self._authorization
        attempt = 0
        while True:
            retry_after: Optional[float] = None
            reused = self._conn is not None
            try:
                self._client._bump("requests")
                conn = self._connection()
                try:
                    conn.request("POST", self._path, body=body, headers=headers)
                    response = conn.getresponse()
                except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine):
                    if not reused:
                        raise
                    # The daemon closed an idle keep-alive connection (RFC 9112 section 9.6 lets
                    # either side do so at any time) before reading this request: open a fresh
                    # one and send again at once; this is no failure to back off from.
                    self._drop_connection()
                    conn = self._connection()
                    conn.request("POST", self._path, body=body, headers=headers)
                    response = conn.getresponse()
                reply = response.read().decode("utf-8", "replace")
                if response.getheader("Connection", "").lower() == "close":
                    self._drop_connection()
                if response.status not in _RETRYABLE:
                    return response.status, reply
                outcome = f"HTTP {response.status}: {reply[:200]}"
                retry_after = _parse_retry_after(response.getheader("Retry-After"))
            except (OSError, http.client.HTTPException) as error:
                self._drop_connection()
                outcome = repr(error)
            if attempt >= self._max_retries or (self._closing.is_set() and attempt > 0):
                self._warn.warning("giveup", "moe-metricsd: giving up on %s after %d attempts: %s",
                                   self.url, attempt + 1, outcome)
                return None, outcome
            delay = min(self._backoff_max, self._backoff_initial * (2 ** attempt))
            delay *= random.uniform(0.5, 1.0)
            if retry_after is not None:
                delay = min(self._backoff_max, max(delay, retry_after))
            attempt += 1
            self._client._bump("retries")
            self._warn.warning("retry", "moe-metricsd: %s: %s; retrying in %.2fs", self.url, outcome, delay)
            self._closing.wait(delay)


def _parse_retry_after(value: Optional[str]) -> Optional[float]:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
