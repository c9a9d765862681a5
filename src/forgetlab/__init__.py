"""forgetlab: measure, explain and reduce catastrophic forgetting.

Example:
    >>> import forgetlab, tempfile
    >>> result = forgetlab.run(forgetlab.RunConfig(), store=tempfile.mkdtemp())
    >>> result.accuracy_matrix.shape
    (2, 2)
"""

from forgetlab._version import __version__
from forgetlab.api import RunResult, run
from forgetlab.config import MethodConfig, ModelConfig, RunConfig, StreamConfig, TrainConfig

__all__ = ["MethodConfig", "ModelConfig", "RunConfig", "RunResult", "StreamConfig", "TrainConfig", "__version__", "run"]
