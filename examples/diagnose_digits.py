"""Diagnose forgetting in a user-defined model: train on digits 0-4, fine-tune naively on
5-9, then ask forgetlab which blocks changed and whether rewinding them restores 0-4.

    python examples/diagnose_digits.py [OUTPUT_DIR]

Runs offline in a few seconds (scikit-learn's bundled digits).
"""

from __future__ import annotations

import copy
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from digits_common import ResidualMLP, digits_tasks, train_plain  # noqa: E402

from forgetlab.user import WrappedModel, diagnose, user_data, write_report  # noqa: E402


def main(out_dir: Path) -> None:
    torch.manual_seed(0)
    tasks = digits_tasks()
    old_model = train_plain(ResidualMLP(), *tasks["old_train"])                      # the user's model, task A
    new_model = train_plain(copy.deepcopy(old_model), *tasks["new_train"], epochs=5)  # naive fine-tuning on B
    torch.save(old_model.state_dict(), out_dir / "old.pt")
    torch.save(new_model.state_dict(), out_dir / "new.pt")

    # Blocks default to the direct children: stem, res1, res2, classifier.
    diagnosis = diagnose(
        WrappedModel(old_model, input_shape=(64,)), WrappedModel(new_model, input_shape=(64,)),
        user_data(*tasks["old_test"], "digits 0-4 (test)"), user_data(*tasks["new_test"], "digits 5-9 (test)"),
    )
    print(diagnosis.format_table())
    report = write_report(diagnosis, out_dir / "report")
    print(f"\nreport: {report}")


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="forgetlab-diagnose-"))
    out.mkdir(parents=True, exist_ok=True)
    main(out)
