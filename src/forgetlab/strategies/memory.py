"""Example buffers for rehearsal methods: pure functions over dicts of tensors.

A buffer is a dict of equally long tensors, e.g. ``{"x": uint8 (N, C, H, W), "y": (N,),
"head": (N,)}``; the empty buffer is ``{}``. Updates return a new dict and draw their
randomness from the generator they are given (a CPU ``torch.Generator``).

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> buffer = reservoir_update({}, {"y": torch.arange(10)}, n_seen=0, capacity=4, generator=g)
    >>> buffer_length(buffer)
    4
"""

from __future__ import annotations

import torch



def buffer_length(buffer: dict[str, torch.Tensor]) -> int:
    """Number of examples in a buffer (0 for ``{}``)."""
    return int(next(iter(buffer.values())).shape[0]) if buffer else 0


def reservoir_slots(n_seen: int, capacity: int, n_new: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Reservoir sampling (Vitter's algorithm R) for ``n_new`` new items, vectorised.

    Item ``i`` of the new ones is the ``k = n_seen + i``-th item of the stream: it takes
    slot ``k`` while the buffer is filling, else slot ``j ~ U{0..k}`` when ``j <
    capacity``. When several new items land in one slot, the last one wins, exactly as
    in the sequential algorithm. Returns ``(slots, sources)``: new item ``sources[m]``
    goes to slot ``slots[m]``.

    Example:
        >>> slots, sources = reservoir_slots(0, 3, 2, torch.Generator().manual_seed(0))
        >>> slots.tolist(), sources.tolist()
        ([0, 1], [0, 1])
    """
    k = n_seen + torch.arange(n_new, dtype=torch.long)
    draw = (torch.rand(n_new, generator=generator, dtype=torch.float64) * (k + 1).double()).floor().long()
    slot = torch.where(k < capacity, k, draw)
    accepted = torch.nonzero(slot < capacity).flatten()
    winner = torch.full((max(min(capacity, n_seen + n_new), 0),), -1, dtype=torch.long)
    winner.scatter_reduce_(0, slot[accepted], accepted, reduce="amax")
    slots = torch.nonzero(winner >= 0).flatten()
    return slots, winner[slots]


def reservoir_update(
    buffer: dict[str, torch.Tensor], new: dict[str, torch.Tensor], *, n_seen: int, capacity: int,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """The buffer after offering it the ``new`` examples (in order) by reservoir sampling;
    ``n_seen`` = examples offered before. The result is a uniform sample of everything seen."""
    n_new = buffer_length(new)
    slots, sources = reservoir_slots(n_seen, capacity, n_new, generator)
    size, new_size = buffer_length(buffer), min(capacity, n_seen + n_new)
    out = {}
    for key, values in new.items():
        grown = values.new_zeros((new_size, *values.shape[1:]))
        if size:
            grown[:size] = buffer[key]
        grown[slots.to(values.device)] = values[sources.to(values.device)]
        out[key] = grown
    return out


def class_balanced_update(
    buffer: dict[str, torch.Tensor], new: dict[str, torch.Tensor], *, capacity: int, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """The buffer after adding ``new``, holding the same number of examples of every
    ``(head, y)`` group seen so far.

    Each group keeps ``capacity // G`` examples (the first ``capacity % G`` groups in
    sorted order one more), a uniform random subset of its examples in the old buffer and
    ``new``; a group with fewer examples keeps them all.

    Example:
        >>> new = {"y": torch.tensor([0, 0, 0, 1, 1, 1]), "head": torch.zeros(6, dtype=torch.long)}
        >>> out = class_balanced_update({}, new, capacity=4, generator=torch.Generator().manual_seed(0))
        >>> out["y"].tolist()
        [0, 0, 1, 1]
    """
    pool = {key: torch.cat([buffer[key], values]) if buffer else values for key, values in new.items()}
    y, head = pool["y"].cpu(), pool["head"].cpu()
    group = head * (int(y.max()) + 1) + y
    labels = torch.unique(group).tolist()
    quota, extra = divmod(capacity, len(labels))
    chosen = []
    for rank, label in enumerate(labels):
        members = torch.nonzero(group == label).flatten()
        take = quota + (rank < extra)
        chosen.append(members[torch.randperm(members.numel(), generator=generator)[:take]])
    index = torch.cat(chosen)
    return {key: values[index.to(values.device)] for key, values in pool.items()}


def sample_indices(size: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` random indices into a buffer of ``size``: without replacement when ``n <= size``.

    Example:
        >>> sorted(sample_indices(3, 3, torch.Generator().manual_seed(0)).tolist())
        [0, 1, 2]
    """
    if n <= size:
        return torch.randperm(size, generator=generator)[:n]
    return torch.randint(size, (n,), generator=generator)
