"""Fine-tune a user-defined model on new classes without forgetting the old ones.

A ResidualMLP trained (plain PyTorch) on digits 0-4 is fine-tuned on 5-9 three ways:
naive, pseudo-rehearsal (the frozen original model labels revision inputs, as spaCy's
``rehearse`` does) and EWC. Old-task accuracy is measured on held-out 0-4 digits.

    python examples/finetune_digits.py [OUTPUT_DIR]

Runs offline in well under a minute (scikit-learn's bundled digits).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from digits_common import ResidualMLP, digits_tasks, train_plain  # noqa: E402

from forgetlab.user import finetune, load_user_data, load_user_model, save_user_model  # noqa: E402


def main(out_dir: Path) -> dict[str, dict[str, float]]:
    torch.manual_seed(0)
    tasks = digits_tasks()
    torch.save(train_plain(ResidualMLP(), *tasks["old_train"]).state_dict(), out_dir / "old.pt")
    # The user's data files: labelled old-task examples the model never trained on, and the new task.
    np.savez(out_dir / "old.npz", x=tasks["old_test"][0], y=tasks["old_test"][1])
    np.savez(out_dir / "new.npz", x=np.concatenate([tasks["new_train"][0], tasks["new_test"][0]]),
             y=np.concatenate([tasks["new_train"][1], tasks["new_test"][1]]))

    model = load_user_model(out_dir / "old.pt", module=ResidualMLP(), input_shape=(64,))
    new_data, old_data = load_user_data(out_dir / "new.npz"), load_user_data(out_dir / "old.npz")
    summary = {}
    for method, params in (("naive", None), ("pseudo-rehearsal", None), ("ewc", {"lam": 2e4, "fisher_samples": 200})):
        result = finetune(model, new_data, method=method, params=params, old_data=old_data, epochs=5)
        print(result.format_report(), end="\n\n")
        save_user_model(result.model, out_dir / f"finetuned-{method}.pt", {"method": method, **result.to_dict()})
        summary[method] = {"old": result.after["old_accuracy"], "new": result.after["new_accuracy"]}
    print("old-task / new-task accuracy after fine-tuning on 5-9:")
    for method, acc in summary.items():
        print(f"  {method:<17} {100 * acc['old']:5.1f}% / {100 * acc['new']:5.1f}%")
    return summary


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="forgetlab-finetune-"))
    out.mkdir(parents=True, exist_ok=True)
    main(out)
