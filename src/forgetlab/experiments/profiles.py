"""Profiles of the Anatomy reproduction: how big every run is.

``quick``: split CIFAR-10 (5,000 training / 1,000 test images per task), a BatchNorm VGG
of width 16 trained to convergence (task 1's test accuracy gains less than 1.5 points when
its epochs double: ``forgetlab reproduce anatomy --check-convergence``), sized for a
2-core CPU (bf16 autocast + channels_last). ``cifar``: the full split CIFAR-10 (25,000 +
5,000 images per task) with a width-32 VGG, converged, for a CPU in the background or a
GPU in minutes; ``cifar-resnet`` the same with a ResNet. ``paper``: paper scale for a GPU.
``quick-v1`` is the unconverged profile of forgetlab <= 0.5 (width 8, 4 epochs), kept so
its stored results and numbers in ``docs/REPRODUCTION.md`` stay reproducible. ``tiny`` is
for tests (digits, seconds). Measured times: ``benchmarks/RESULTS.md``.

Example:
    >>> PROFILES["quick"].train_per_task, PROFILES["quick"].epochs
    (5000, 16)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from forgetlab.errors import ConfigError, did_you_mean


MIXUP_HEADS = ("shared", "separate")


@dataclass(frozen=True)
class AnatomyProfile:
    """How every run of the Anatomy reproduction is built (SPEC §3, §6).

    Attributes:
        name: profile name.
        dataset: default ``--dataset`` (``cifar10`` = split CIFAR-10, 2 tasks x 5 classes).
        model: default ``--model`` family.
        width, depth, batch_norm: model size (``None`` = the family's default).
        epochs: epochs per task.
        lr: learning rate (``None`` = the dataset's default); SGD with momentum 0.9.
        lr_schedule: learning-rate schedule within each task.
        batch_size: training batch size.
        train_per_task, test_per_task: class-balanced seeded subsamples (0 = all).
        n_seeds: default ``--seeds`` (error bands are mean ± std over seeds).
        subspace_k: number of principal components of the subspace similarity.
        pool: average-pool conv maps before CKA / subspace (default: flattened, SPEC §3).
        fisher_samples: examples per task for EWC's Fisher and the trace overlap.
        ewc_lams, si_cs, replay_fractions: mitigation grids (EWC lambda with the exact
            per-sample empirical Fisher; SI c; replay fraction r of each batch). A run
            that diverges (too strong a penalty for the learning rate; ``quick``: EWC
            lambda = 100 at lr 0.05) is reported as a diverged point (NaN), not a crash.
        replay_buffer: replay buffer size.
        mixup_alphas: mixing fractions of the mixup-fraction sweep (any grid in [0, 1]).
        mixup_head: ``shared`` (one binary head for both tasks, SPEC §1) or ``separate``
            (Lee, Goldt & Saxe, ICML 2021: task 2 trains a fresh head; task 1's head keeps
            its post-task-1 weights).
        class_pair_variants: ``(label, class_sets)`` of the class-pairs analysis; empty =
            the four CIFAR-10 presets (task 1 two/four x task 2 similar/dissimilar).
        eval_every_steps: ``train.eval_every_steps`` of every run (0 = evaluate all tasks
            after every epoch; a number above a task's steps = only at task ends, which
            keeps the accuracy matrix and drops the learning curves' inner points).
        torch_threads: ``torch.set_num_threads`` while training the runs (0 = leave as
            is; the measurements after training keep the machine's threads). On
            the shared 2-core machine one thread trained 7-14x faster than two (893 vs 63
            img/s for a width-8 VGG under a load average of 7), so ``quick`` uses 1.
        augment: ``stream.augment`` of every run (``auto``: the dataset's default, crop +
            flip for CIFAR; ``off``: none, which converges in fewer epochs on 5,000 images).
        normalize: ``stream.normalize`` of every run.
        precision, memory_format: ``train.precision`` and ``train.memory_format`` of every
            run (``bf16`` + ``channels_last``: ~2x faster on a CPU with native bf16, same
            accuracy within a point: ``benchmarks/RESULTS.md``, "Training speed").
        convergence_factor: the convergence check trains task 1 alone for ``epochs`` and
            for ``convergence_factor * epochs`` epochs; it passes when the longer training
            gains less than ``convergence_threshold`` (a fraction: 0.015 = 1.5 points).
    """

    name: str
    dataset: str = "cifar10"
    model: str = "vgg"
    width: int | None = None
    depth: int | None = None
    batch_norm: bool | None = None
    epochs: int = 2
    lr: float | None = None
    lr_schedule: str = "constant"
    batch_size: int = 128
    train_per_task: int = 0
    test_per_task: int = 0
    n_seeds: int = 1
    subspace_k: int = 10
    pool: bool = False
    fisher_samples: int = 500
    ewc_lams: tuple[float, ...] = (1.0, 10.0, 100.0)
    si_cs: tuple[float, ...] = (0.1, 1.0, 10.0)
    replay_fractions: tuple[float, ...] = (0.1, 0.3, 0.5)
    replay_buffer: int = 1000
    mixup_alphas: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)
    mixup_head: str = "shared"
    class_pair_variants: tuple[tuple[str, tuple[str, ...]], ...] = field(default=())
    eval_every_steps: int = 0
    torch_threads: int = 0
    augment: str = "auto"
    normalize: str = "standard"
    precision: str = "fp32"
    memory_format: str = "contiguous"
    convergence_factor: int = 2
    convergence_threshold: float = 0.015

    def __post_init__(self) -> None:
        if self.eval_every_steps < 0 or self.torch_threads < 0:
            raise ConfigError("The 'eval_every_steps' and 'torch_threads' parameters of AnatomyProfile must be >= 0.")
        for name in ("epochs", "batch_size", "n_seeds", "subspace_k", "fisher_samples", "replay_buffer",
                     "convergence_factor"):
            if getattr(self, name) < 1:
                raise ConfigError(f"The {name!r} parameter of AnatomyProfile must be >= 1. Got {getattr(self, name)!r} instead.")
        if not all(0.0 <= a <= 1.0 for a in self.mixup_alphas):
            raise ConfigError(f"The 'mixup_alphas' parameter of AnatomyProfile must lie in [0, 1]. Got {self.mixup_alphas!r} instead.")
        if self.mixup_head not in MIXUP_HEADS:
            raise ConfigError(
                f"The 'mixup_head' parameter of AnatomyProfile must be one of {', '.join(map(repr, MIXUP_HEADS))}. "
                f"Got {self.mixup_head!r} instead.{did_you_mean(self.mixup_head, MIXUP_HEADS)}"
            )


# The mixup-fraction grid (issue 19): 0, 0.1, ..., 1 and two points in (0, 0.1).
MIXUP_GRID = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

# The full splits (25,000 + 5,000 images per task), a width-32 BN VGG; 1 seed on a CPU
# in the background (resumable), minutes on a GPU.
_CIFAR = AnatomyProfile(
    name="cifar", dataset="cifar10", model="vgg", width=32, depth=3, batch_norm=True, epochs=12, lr=0.05,
    lr_schedule="cosine", batch_size=128, train_per_task=0, test_per_task=0, n_seeds=1, subspace_k=10,
    fisher_samples=1000, ewc_lams=(1.0, 3.0, 10.0), si_cs=(0.1, 1.0, 10.0),
    replay_fractions=(0.1, 0.3, 0.5), replay_buffer=2500, mixup_alphas=MIXUP_GRID,
    eval_every_steps=1_000_000, torch_threads=1, augment="off", precision="bf16", memory_format="channels_last",
)

PROFILES: dict[str, AnatomyProfile] = {
    # Converged on split CIFAR-10 at CPU cost (issue 19). Task 1 alone, 5,000 images,
    # width-16 BN VGG, lr 0.05 cosine, no augmentation (measured, one seed): 8 epochs
    # 71.8%, 16 epochs 74.6%, 32 epochs 74.2% (converged at 16); with crop + flip 20 -> 40
    # epochs still gained 2.7 points (75.0 -> 77.7%), so augmentation is off. 13 mixing
    # fractions, 3 seeds; bf16 + channels_last (every mixup run shares one task-1 training:
    # task 1 is the same data for every alpha).
    "quick": AnatomyProfile(
        name="quick", dataset="cifar10", model="vgg", width=16, depth=3, batch_norm=True, epochs=16, lr=0.05,
        lr_schedule="cosine", batch_size=64, train_per_task=5000, test_per_task=1000, n_seeds=3, subspace_k=10,
        fisher_samples=500, ewc_lams=(1.0, 3.0, 10.0), si_cs=(0.1, 1.0, 10.0),
        replay_fractions=(0.1, 0.3, 0.5), replay_buffer=1000, mixup_alphas=MIXUP_GRID,
        eval_every_steps=1_000_000, torch_threads=1, augment="off", precision="bf16", memory_format="channels_last",
    ),
    "cifar": _CIFAR,
    # The same with a CIFAR ResNet (stem width 16, 4 basic blocks; 43,226 parameters with two 5-way heads).
    "cifar-resnet": replace(_CIFAR, name="cifar-resnet", model="resnet", width=16, depth=4),
    # forgetlab <= 0.5's quick profile (unconverged; its results in REPRODUCTION.md):
    # whole reproduction < 30 min on 2 CPU cores: 5,000 training / 1,000 test images per
    # task (of 25,000 / 5,000), 4 epochs, a VGG of width 8 (conv1-conv3 + fc), one seed,
    # one torch thread, evaluation only at task ends. (With 2,000 images per task and
    # width 16 task 1 stayed at 52% and task 2 did not hurt it: no forgetting to analyse.)
    "quick-v1": AnatomyProfile(
        name="quick-v1", dataset="cifar10", model="vgg", width=8, depth=3, epochs=4, lr=0.05,
        batch_size=64, train_per_task=5000, test_per_task=1000, n_seeds=1, subspace_k=10,
        fisher_samples=500, ewc_lams=(1.0, 3.0, 10.0), si_cs=(0.1, 1.0, 10.0),
        replay_fractions=(0.1, 0.3, 0.5), replay_buffer=1000, mixup_alphas=(0.0, 0.1, 0.25, 0.5, 1.0),
        eval_every_steps=1_000_000, torch_threads=1,
    ),
    # Paper scale (for a GPU): full CIFAR-10 splits, a VGG of width 64, 30 epochs with a
    # cosine schedule, 3 seeds, finer grids; bf16 autocast + channels_last (tensor cores).
    "paper": AnatomyProfile(
        name="paper", dataset="cifar10", model="vgg", width=64, depth=3, epochs=30, lr=0.05,
        lr_schedule="cosine", batch_size=128, train_per_task=0, test_per_task=0, n_seeds=3, subspace_k=20,
        fisher_samples=2000, ewc_lams=(1.0, 10.0, 100.0, 1000.0, 10000.0), si_cs=(0.01, 0.1, 1.0, 10.0, 100.0),
        replay_fractions=(0.05, 0.1, 0.2, 0.3, 0.5), replay_buffer=5000, mixup_alphas=MIXUP_GRID,
        precision="bf16", memory_format="channels_last",
    ),
    # Tests only: scikit-learn digits and a small MLP; every analysis in seconds.
    "tiny": AnatomyProfile(
        name="tiny", dataset="digits", model="mlp", width=32, depth=3, epochs=1, lr=0.1, batch_size=32,
        train_per_task=150, test_per_task=60, n_seeds=1, subspace_k=3, fisher_samples=32,
        ewc_lams=(10.0,), si_cs=(1.0,), replay_fractions=(0.3,), replay_buffer=100, mixup_alphas=(0.0, 1.0),
        class_pair_variants=(("similar", ("0+1", "2+3")), ("dissimilar", ("0+1", "7+9"))),
        eval_every_steps=1_000_000, torch_threads=1,
    ),
}


def get_profile(name: str) -> AnatomyProfile:
    """The registered profile ``name``; an unknown name lists the valid ones."""
    if name not in PROFILES:
        raise ConfigError(
            f"The 'profile' parameter must be one of {', '.join(map(repr, PROFILES))}. "
            f"Got {name!r} instead.{did_you_mean(name, PROFILES)}"
        )
    return PROFILES[name]
