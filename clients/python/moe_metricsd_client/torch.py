"""Watch the routers of a PyTorch mixture-of-experts model without stalling the training step.

    from moe_metricsd_client import MetricsClient
    from moe_metricsd_client.torch import watch

    watcher = watch(model, MetricsClient("http://127.0.0.1:9477"), optimizer=optimizer)
    ...  # train as usual; each optimizer step posts one step of every router
    watcher.close()

:func:`watch` finds the routers of Hugging Face Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE and
DeepSeek-V3 models by their module types (a ``routers`` function covers any other router) and puts a
forward hook on each. The hook adds what the router returned, its top-k expert indices, to one
``[layers, experts]`` tensor on the router's device (``index_add_``, no host round trip), with the
sums over tokens that the load-balance and z losses need. Nothing on the training thread reads a
device value: :meth:`Watcher.step` starts one non-blocking copy of the accumulator into pinned host
memory behind a CUDA event and returns; a poster thread waits for the event and hands one decision
per layer to the client, whose own thread posts them. When the daemon is slow or gone, steps are
dropped and counted in :attr:`Watcher.stats`; the training loop never waits.

This module needs torch; the rest of the package does not.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib
import queue
import re
import sys
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import torch

from .client import MetricsClient

__all__ = ["Router", "Watcher", "WatcherStats", "hugging_face_router", "watch"]


class Router(NamedTuple):
    """How to read one router module from its forward hook.

    ``read(inputs, output)`` gets the hook's arguments and returns ``(indices, logits)``: the top-k
    expert indices the router chose, ``[tokens, top_k]`` (or ``[tokens]`` for top-1), and its
    logits ``[tokens, num_experts]`` before any softmax or sigmoid, or None when it has none (the
    losses are then not sent). Both are only read on the device; returning views is fine.
    """

    num_experts: int
    top_k: int
    read: Callable[[Tuple[Any, ...], Any], Tuple[torch.Tensor, Optional[torch.Tensor]]]


# The router modules of the Hugging Face models we know. Each returns
# (router_logits, routing_weights, selected_experts) from its forward, the indices being the ones
# the experts then use: DeepSeek-V3's group-limited, bias-corrected choice included.
_HF_ROUTERS = (
    ("transformers.models.mixtral.modeling_mixtral", "MixtralTopKRouter"),
    ("transformers.models.qwen2_moe.modeling_qwen2_moe", "Qwen2MoeTopKRouter"),
    ("transformers.models.qwen3_moe.modeling_qwen3_moe", "Qwen3MoeTopKRouter"),
    ("transformers.models.olmoe.modeling_olmoe", "OlmoeTopKRouter"),
    ("transformers.models.deepseek_v3.modeling_deepseek_v3", "DeepseekV3TopkRouter"),
)


def _hugging_face_router_types() -> Tuple[type, ...]:
    if "transformers" not in sys.modules:  # a model built without transformers has none of them
        return ()
    found = []
    for module_name, class_name in _HF_ROUTERS:
        try:
            found.append(getattr(importlib.import_module(module_name), class_name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def _read_hugging_face(inputs: Tuple[Any, ...], output: Any) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    logits, _weights, indices = output
    return indices, logits


def hugging_face_router(name: str, module: torch.nn.Module) -> Optional[Router]:
    """The :class:`Router` of a Hugging Face MoE router module, or None for any other module."""
    types = _hugging_face_router_types()
    if types and isinstance(module, types):
        return Router(int(module.num_experts), int(module.top_k), _read_hugging_face)
    return None


class WatcherStats(NamedTuple):
    """Counters since the watcher started, in steps.

    ``steps``: steps ended (:meth:`Watcher.step` calls). ``posted``: steps whose every layer the
    daemon accepted. ``dropped``: steps lost on our side: the poster was still behind (no free host
    buffer), too many steps were waiting for the daemon, or the client gave up on one of their
    decisions (daemon unreachable or busy). ``rejected``: steps with a decision the daemon refused.
    ``empty``: steps in which no watched router ran (nothing to post). ``pending``: steps ended and
    not yet finished.
    """

    steps: int
    posted: int
    dropped: int
    rejected: int
    empty: int
    pending: int


_NAME_BAD = re.compile(r"[^A-Za-z0-9_.:-]")
_STOP = object()


def _layer_name(prefix: str, path: str) -> str:
    """A module path as a daemon layer name: 1 to 64 characters of ``[A-Za-z0-9_.:-]``."""
    name = _NAME_BAD.sub("_", prefix + (path or "root"))
    if len(name) > 64:
        # Keep the distinctive tail (the layer number is near the end) and a hash of the whole.
        digest = hashlib.blake2s(name.encode(), digest_size=4).hexdigest()
        name = name[-55:] + "." + digest
    return name


def _in_backward() -> bool:
    """True while autograd runs a backward pass: a checkpointed layer re-running its forward."""
    task_id = getattr(torch._C, "_current_graph_task_id", None)
    return task_id is not None and task_id() != -1


class _Layer(NamedTuple):
    index: int
    name: str
    router: Router


class _Slot:
    """Host buffers of one step in flight: one per device accumulator, pinned on CUDA."""

    def __init__(self) -> None:
        self.host: Dict[torch.device, torch.Tensor] = {}
        self.events: Dict[torch.device, Any] = {}

    def fill(self, device: torch.device, acc: torch.Tensor) -> None:
        host = self.host.get(device)
        if host is None:
            host = torch.empty(acc.shape, dtype=acc.dtype, pin_memory=device.type == "cuda")
            self.host[device] = host
        if device.type == "cuda":
            # Pinned destination + non_blocking: the copy is queued on the stream and the call
            # returns at once; the event marks its completion for the poster thread.
            host.copy_(acc, non_blocking=True)
            event = self.events.get(device)
            if event is None:
                event = torch.cuda.Event()
                self.events[device] = event
            event.record(torch.cuda.current_stream(device))
        else:
            host.copy_(acc)

    def wait(self) -> None:
        for event in self.events.values():
            event.synchronize()


class _Ticket:
    """One step's decisions in the client: finished when every layer has an outcome."""

    def __init__(self, watcher: "Watcher", layers: int) -> None:
        self._watcher = watcher
        self._left = layers
        self._outcomes: set = set()
        self._lock = threading.Lock()

    def done(self, outcome: str) -> None:
        with self._lock:
            self._outcomes.add(outcome)
            self._left -= 1
            if self._left:
                return
        if self._outcomes == {"sent"}:
            self._watcher._finish("posted", from_client=True)
        elif "rejected" in self._outcomes or "invalid" in self._outcomes:
            self._watcher._finish("rejected", from_client=True)
        else:
            self._watcher._finish("dropped", from_client=True)


class Watcher:
    """Counts what the routers of a model chose, per step, and posts it to moe-metricsd.

    Made by :func:`watch`; see there for the arguments.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        client: MetricsClient,
        *,
        routers: Optional[Callable[[str, torch.nn.Module], Optional[Router]]] = None,
        optimizer: Optional[torch.optim.Optimizer] = None,
        worker: Optional[Any] = None,
        start_step: int = 0,
        prefix: str = "",
        losses: bool = True,
        buffers: int = 4,
        max_pending_steps: int = 16,
    ) -> None:
        self._client = client
        self._losses = bool(losses)
        self._worker = None if worker is None else str(worker)
        self._next_step = int(start_step)
        self._max_pending = max(1, int(max_pending_steps))
        self._layers: List[_Layer] = []
        self._handles: List[Any] = []
        for path, module in model.named_modules():
            router = routers(path, module) if routers is not None else None
            if router is None:
                router = hugging_face_router(path, module)
            if router is None:
                continue
            layer = _Layer(len(self._layers), _layer_name(prefix, path), router)
            self._layers.append(layer)
            self._handles.append(module.register_forward_hook(self._hook_for(layer)))
        if not self._layers:
            self.remove()
            raise ValueError("no MoE router found in the model: pass routers= for this model's router type")
        names = [layer.name for layer in self._layers]
        if len(set(names)) != len(names):
            self.remove()
            raise ValueError("two routers map to the same layer name; give a prefix or shorter module names")
        self._experts = max(layer.router.num_experts for layer in self._layers)
        # Row layout: counts of experts 0..E-1, a no-expert bin (indices outside 0..E-1), then
        # from offset E_max + 1 the softmax sums of experts 0..E-1 and the z-loss sum.
        self._width = 2 * self._experts + 2
        self._acc: Dict[torch.device, torch.Tensor] = {}
        self._ones: Dict[torch.device, torch.Tensor] = {}
        self._tokens = [0] * len(self._layers)
        self._with_logits = [False] * len(self._layers)
        self._paused = False
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._counts = dict(steps=0, posted=0, dropped=0, rejected=0, empty=0)
        self._unfinished = 0
        self._in_client = 0
        self._free: "queue.Queue[_Slot]" = queue.Queue()
        for _ in range(max(1, int(buffers))):
            self._free.put(_Slot())
        self._ready: "queue.Queue[Any]" = queue.Queue()
        self._closed = False
        self._optimizer_handle = None
        if optimizer is not None:
            self._optimizer_handle = optimizer.register_step_post_hook(lambda *_: self.step())
        self._thread = threading.Thread(target=self._post_loop, name="moe-metricsd-watcher", daemon=True)
        self._thread.start()
        # Registered after the client's, so it runs before it at exit (atexit is last in, first
        # out): ended steps reach the client while it can still send them.
        atexit.register(self._atexit)

    # The training thread's side: no host synchronisation, no blocking.

    @property
    def layers(self) -> List[str]:
        """The layer names, in model order."""
        return [layer.name for layer in self._layers]

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Within it, forward passes are not counted (e.g. evaluation between training steps)."""
        was, self._paused = self._paused, True
        try:
            yield
        finally:
            self._paused = was

    def _hook_for(self, layer: _Layer) -> Callable[..., None]:
        def hook(module: torch.nn.Module, inputs: Tuple[Any, ...], output: Any) -> None:
            if self._paused or self._closed or _in_backward():
                return
            indices, logits = layer.router.read(inputs, output)
            self._add(layer, indices, logits)

        return hook

    def _add(self, layer: _Layer, indices: torch.Tensor, logits: Optional[torch.Tensor]) -> None:
        experts = layer.router.num_experts
        with torch.no_grad():
            flat = indices.detach().reshape(-1)
            device = flat.device
            acc = self._acc.get(device)
            if acc is None:
                acc = torch.zeros((len(self._layers), self._width), dtype=torch.float64, device=device)
                self._acc[device] = acc
            ones = self._ones.get(device)
            if ones is None or ones.numel() < flat.numel():
                ones = torch.ones(max(flat.numel(), 1024), dtype=torch.float64, device=device)
                self._ones[device] = ones
            row = acc[layer.index]
            # An index outside 0..E-1 (-1 or E: "no expert" in some expert-parallel routers)
            # lands in the overflow bin E, never in an expert's count or another field.
            bins = flat.clamp(-1, experts).remainder(experts + 1)
            row[: experts + 1].index_add_(0, bins, ones[: flat.numel()])
            if logits is not None and self._losses:
                scores = logits.detach().reshape(-1, experts).float()
                # One fused log-softmax gives both sums: the probabilities are its exp, and
                # logsumexp(x) = x_0 - log_softmax(x)_0, in as few small kernels as we know.
                log_probs = scores.log_softmax(dim=-1)
                lse = scores[:, 0] - log_probs[:, 0]
                sums = torch.cat((log_probs.exp().sum(dim=0), torch.dot(lse, lse).reshape(1)))
                base = self._experts + 1
                row[base : base + experts + 1] += sums
                self._with_logits[layer.index] = True
        # Shapes are host metadata: reading them waits for nothing. [..., k] holds one row per token.
        self._tokens[layer.index] += indices.numel() // indices.shape[-1] if indices.dim() > 1 else indices.numel()

    def step(self, step: Optional[int] = None) -> None:
        """Ends a step: everything counted since the last call is posted as step ``step``.

        Without an argument, steps are numbered from ``start_step`` on. Called by the optimizer's
        step hook when an optimizer was given. Never blocks: the copy to host memory is queued
        on the device and the posting is done by other threads.
        """
        if self._closed:
            return
        number = self._next_step if step is None else int(step)
        self._next_step = number + 1
        tokens, self._tokens = self._tokens, [0] * len(self._layers)
        with_logits, self._with_logits = self._with_logits, [False] * len(self._layers)
        with self._lock:
            self._counts["steps"] += 1
            if not any(tokens):
                self._counts["empty"] += 1
                return
            self._unfinished += 1
        try:
            slot = self._free.get_nowait()
        except queue.Empty:
            slot = None
        for device, acc in self._acc.items():
            if slot is not None:
                slot.fill(device, acc)
            acc.zero_()
        if slot is None:
            self._finish("dropped")
            return
        self._ready.put((slot, number, tokens, with_logits))

    # The poster thread.

    def _worker_name(self) -> Optional[str]:
        if self._worker is not None:
            return self._worker
        distributed = getattr(torch, "distributed", None)
        if distributed is not None and distributed.is_available() and distributed.is_initialized():
            return str(distributed.get_rank())
        return None

    def _post_loop(self) -> None:
        while True:
            item = self._ready.get()
            if item is _STOP:
                return
            slot, number, tokens, with_logits = item
            try:
                slot.wait()
                rows = None
                for host in slot.host.values():
                    rows = host.tolist() if rows is None else [
                        [a + b for a, b in zip(r, s)] for r, s in zip(rows, host.tolist())
                    ]
            except Exception:  # noqa: BLE001 - a broken device must not kill the poster
                rows = None
            self._free.put(slot)
            if rows is None:
                self._finish("dropped")
                continue
            self._post_step(number, tokens, with_logits, rows)

    def _post_step(self, number: int, tokens: List[int], with_logits: List[bool], rows: List[List[float]]) -> None:
        with self._lock:
            if self._in_client >= self._max_pending:
                drop = True
            else:
                drop = False
                self._in_client += 1
        if drop:
            self._finish("dropped")
            return
        worker = self._worker_name()
        if worker is not None:  # else the client's own worker, if it has one
            extra_envelope: Dict[str, Any] = {"worker": worker}
        else:
            extra_envelope = {}
        active = [layer for layer in self._layers if tokens[layer.index]]
        ticket = _Ticket(self, len(active))
        for layer in active:
            experts, k = layer.router.num_experts, layer.router.top_k
            total = tokens[layer.index]
            row = rows[layer.index]
            counts = [int(round(c)) for c in row[:experts]]
            extra: Dict[str, Any] = {}
            if with_logits[layer.index]:
                base = self._experts + 1
                probs = row[base : base + experts]
                extra["load_balance_loss"] = load_balance_loss(counts, probs, total, k)
                extra["router_z_loss"] = row[base + experts] / total
            self._client.record(layer.name, counts, total_tokens=total, step=number, top_k=k,
                                on_done=ticket.done, **extra_envelope, **extra)

    def _finish(self, outcome: str, from_client: bool = False) -> None:
        with self._idle:
            self._counts[outcome] += 1
            self._unfinished -= 1
            if from_client:
                self._in_client -= 1
            self._idle.notify_all()

    # Both sides.

    @property
    def stats(self) -> WatcherStats:
        with self._lock:
            return WatcherStats(pending=self._unfinished, **self._counts)

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Waits until every ended step was posted, refused or dropped; True if that happened.

        Steps still held are handed to the client; its own retries bound how long this takes.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._unfinished > 0:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def remove(self) -> None:
        """Takes the hooks off the model (the watcher counts nothing more)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if getattr(self, "_optimizer_handle", None) is not None:
            self._optimizer_handle.remove()
            self._optimizer_handle = None

    def close(self, timeout: float = 10.0) -> bool:
        """Removes the hooks, delivers every ended step to the client and stops the poster.

        What was counted after the last :meth:`step` is not posted. The client stays open (close
        it after the watcher). Returns True when every step finished within ``timeout``.
        """
        if self._closed:
            return self._unfinished == 0
        self.remove()
        self._closed = True
        done = self.flush(timeout)
        self._ready.put(_STOP)
        self._thread.join(timeout if done else 1.0)
        atexit.unregister(self._atexit)
        return done

    def _atexit(self) -> None:
        self.close(timeout=2.0)

    def __enter__(self) -> "Watcher":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def load_balance_loss(counts: Sequence[float], probability_sums: Sequence[float], tokens: int, top_k: int) -> float:
    """Switch Transformer's auxiliary loss, for top-k routing: E * sum_i f_i * P_i.

    f_i is expert i's share of the step's k x T assignments and P_i its mean router probability
    (softmax of the logits) over the T tokens (Fedus et al. 2021, eq. 4, with f_i over k x T
    assignments so that a uniform router scores 1 for any k).
    """
    experts = len(counts)
    assignments = tokens * top_k
    if assignments == 0:
        return 0.0
    return experts * sum(c / assignments * p / tokens for c, p in zip(counts, probability_sums))


def watch(model: torch.nn.Module, client: MetricsClient, **options: Any) -> Watcher:
    """Attaches a :class:`Watcher` to every MoE router of ``model``.

    Arguments (all optional but the first two):
        routers: ``routers(module_path, module) -> Router | None``, asked for every module before
            the built-in Hugging Face detection; return a :class:`Router` for a router of your own.
        optimizer: each ``optimizer.step()`` ends a watcher step (gradient accumulation and several
            forward passes per step add up). Without it, call ``watcher.step()`` yourself.
        worker: the ``worker`` sent with every decision; by default the rank under an initialised
            ``torch.distributed``, else the client's own.
        start_step: the number of the first step (then counted up; ``step(n)`` sets it).
        prefix: prepended to each module path to make the layer name.
        losses: compute the load-balance and z losses from the router logits (default True).
        buffers: host buffers, i.e. steps whose copy may be in flight at once (default 4).
        max_pending_steps: steps waiting for the daemon before new ones are dropped (default 16).

    Layers are named by the router's module path (``model.layers.3.mlp.gate``), made safe for the
    daemon (other characters become ``_``; past 64 characters, the tail and a short hash).
    """
    return Watcher(model, client, **options)
