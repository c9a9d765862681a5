"""Sweeps: grids of run configs, and the one function that executes them.

A sweep is a list of :class:`~forgetlab.config.RunConfig`. :func:`expand` builds one
from a base config and a grid of ``--set``-style keys; :func:`execute` runs a list
(in-process, one after another) through :func:`forgetlab.run`, which returns finished
runs from the result store without training again.

Prefix reuse: a run whose method is *prefix-neutral*
(:data:`forgetlab.strategies.PREFIX_NEUTRAL`: it does nothing during task 1 but its
``after_task``) trains task 1 exactly as the naive run with the same stream, model and
training config. :func:`execute` therefore runs that naive run first (its :func:`prefix_key`
is the same) and starts the other run from the naive run's ``task-1.pt``: a freeze sweep
over k = 0..L trains task 1 once. The store records the reuse
(:meth:`~forgetlab.store.ResultStore.reuse_source`).

Other executors (processes, Ray) only need to provide the same ``execute`` signature.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from forgetlab.config import MethodConfig, RunConfig, apply_overrides, resolve
from forgetlab.errors import ConfigError
from forgetlab.store import ResultStore


def expand(base: RunConfig, grid: Mapping[str, Sequence[Any]]) -> list[RunConfig]:
    """The cartesian product of ``grid`` (``{"method.lam": [1, 10], "train.seed": [0, 1]}``)
    applied to ``base``, in row-major order (the last key varies fastest).

    Example:
        >>> configs = expand(RunConfig(), {"method.name": ["freeze"], "method.n_blocks": [0, 1, 2]})
        >>> [c.method.params.n_blocks for c in configs]
        [0, 1, 2]
    """
    keys = list(grid)
    for key in keys:
        if isinstance(grid[key], (str, bytes)) or not isinstance(grid[key], Sequence) or not grid[key]:
            raise ConfigError(f"The grid value of {key!r} must be a non-empty list. Got {grid[key]!r} instead.")
    return [
        apply_overrides(base, [f"{key}={_text(value)}" for key, value in zip(keys, values)])
        for values in itertools.product(*(grid[key] for key in keys))
    ]


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) else str(value)


def prefix_source(config: RunConfig) -> RunConfig | None:
    """The naive config whose task-1 training ``config`` may reuse, or ``None`` (the method
    acts during task 1, or ``config`` is itself naive, or there is one task only).

    Example:
        >>> from forgetlab.config import MethodConfig
        >>> prefix_source(RunConfig(method=MethodConfig("ewc"))).method.name
        'naive'
        >>> prefix_source(RunConfig(method=MethodConfig("si"))) is None
        True
    """
    from forgetlab.strategies import PREFIX_NEUTRAL

    if config.method.name == "naive" or config.method.name not in PREFIX_NEUTRAL or config.stream.n_tasks < 2:
        return None
    return replace(config, method=MethodConfig())


def prefix_key(config: RunConfig) -> str:
    """Hash of "trained through task 1": stream, model, train, and the method only if it is
    not prefix-neutral. Runs with equal keys have identical task-1 checkpoints.

    Example:
        >>> from forgetlab.config import MethodConfig
        >>> prefix_key(RunConfig(method=MethodConfig("ewc"))) == prefix_key(RunConfig())
        True
    """
    from forgetlab.strategies import PREFIX_NEUTRAL

    resolved = resolve(config)
    data = resolved.to_dict()
    if resolved.method.name in PREFIX_NEUTRAL:
        data.pop("method")
    payload = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def execute(
    configs: Sequence[RunConfig],
    store: ResultStore,
    *,
    device: str = "auto",
    data_dir: str | Path | None = None,
    download: bool = False,
    progress: bool = False,
    reuse_prefix: bool = True,
) -> list[Any]:
    """Run every config in-process (finished ones come from the store); returns the
    :class:`~forgetlab.api.RunResult` of each, in order.

    With ``reuse_prefix`` a prefix-neutral run starts from the naive run's task-1
    checkpoint (that naive run is executed first if needed). An interrupted call
    (Ctrl-C, kill) resumes when called again: runs restart from their task-boundary
    checkpoints and finished runs are read back.

    Example:
        >>> import tempfile
        >>> from forgetlab.store import ResultStore
        >>> store = ResultStore(tempfile.mkdtemp())
        >>> base = apply_overrides(RunConfig(), ["train.epochs=1"])
        >>> results = execute(expand(base, {"method.name": ["freeze"], "method.n_blocks": [0, 1]}), store)
        >>> [store.reuse_source(r.run_id) is not None for r in results]
        [True, True]
    """
    from forgetlab.api import run
    from forgetlab.engine.checkpoint import checkpoint_path

    results = []
    bar = _bar(len(configs), progress)
    try:
        for config in configs:
            start_from = None
            source = prefix_source(config) if reuse_prefix else None
            if source is not None:
                done = store.get(resolve(config).run_id())
                if done is None or done.status != "finished":
                    source_result = run(source, device=device, data_dir=data_dir, download=download, store=store,
                                        progress=progress)
                    start_from = checkpoint_path(source_result.run_dir / "checkpoints", 0)
            results.append(
                run(config, device=device, data_dir=data_dir, download=download, store=store, progress=progress,
                    start_from=start_from)
            )
            bar.update()
    finally:
        bar.close()
    return results


def _bar(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="runs", disable=not enabled, leave=False, dynamic_ncols=True, unit="run")
