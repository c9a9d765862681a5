"""Experiments: sweeps of runs, checkpoint comparison and the Anatomy of Catastrophic Forgetting reproduction.

Example:
    >>> from forgetlab.experiments import ANALYSES
    >>> ANALYSES[:3]
    ('freeze', 'reset', 'cka')
"""

from forgetlab.experiments.anatomy import (
    ANALYSES,
    ANALYSIS_FUNCTIONS,
    AnatomyContext,
    Reproduction,
    base_config,
    class_pairs_analysis,
    cka_analysis,
    freeze_sweep,
    mitigation_analysis,
    mixup_analysis,
    reproduce_anatomy,
    reset_blocks,
    reset_sweep,
    subspace_analysis,
    task2_only_config,
)
from forgetlab.experiments.executors import EXECUTORS, ExecutorConfig
from forgetlab.experiments.profiles import PROFILES, AnatomyProfile, get_profile
from forgetlab.experiments.compare import compare_checkpoints
from forgetlab.experiments.sweep import execute, expand, parse_grid, prefix_key, prefix_source, require_finished

__all__ = [
    "ANALYSES", "ANALYSIS_FUNCTIONS", "AnatomyContext", "AnatomyProfile", "EXECUTORS", "ExecutorConfig", "PROFILES",
    "Reproduction",
    "base_config", "class_pairs_analysis", "cka_analysis", "compare_checkpoints", "execute", "expand", "freeze_sweep",
    "get_profile", "mitigation_analysis", "mixup_analysis", "parse_grid", "prefix_key", "prefix_source", "reproduce_anatomy",
    "require_finished", "reset_blocks", "reset_sweep", "subspace_analysis", "task2_only_config",
]
