"""Add new labels to a trained model without forgetting the old ones (spaCy's use case).

A ResidualMLP with a 5-output head, trained (plain PyTorch) on digits 0-4, is fine-tuned
on digits 5-9 as NEW labels: ``finetune`` grows the head to 10 outputs (the old rows
kept, the new rows freshly initialised). Four methods: naive, pseudo-rehearsal, EWC and
replay. Old-class accuracy on held-out 0-4, new-class accuracy on held-out 5-9,
all-class accuracy on both together (argmax over all 10 outputs).

    python examples/add_label_digits.py [OUTPUT_DIR]

Runs offline in a few seconds (scikit-learn's bundled digits).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from digits_common import ResidualMLP, digits_tasks, train_plain  # noqa: E402

from forgetlab.user import finetune, load_user_model, save_user_model, user_data  # noqa: E402

METHODS = (("naive", None), ("pseudo-rehearsal", None), ("ewc", {"lam": 2e3, "fisher_samples": 200}), ("replay", None))


def main(out_dir: Path) -> dict[str, dict[str, float]]:
    torch.manual_seed(0)
    tasks = digits_tasks()
    old_model = train_plain(ResidualMLP(n_classes=5), *tasks["old_train"])  # knows 0-4 only: 5 outputs
    torch.save(old_model.state_dict(), out_dir / "old5.pt")
    model = load_user_model(out_dir / "old5.pt", module=ResidualMLP(n_classes=5), input_shape=(64,))
    old_data = user_data(*tasks["old_test"], "held-out digits 0-4")
    new_data = user_data(np.concatenate([tasks["new_train"][0], tasks["new_test"][0]]),
                         np.concatenate([tasks["new_train"][1], tasks["new_test"][1]]), "digits 5-9 (new labels)")
    summary = {}
    for method, params in METHODS:
        result = finetune(model, new_data, method=method, params=params, old_data=old_data, epochs=5)
        print(result.format_report(), end="\n\n")
        save_user_model(result.model, out_dir / f"added-{method}.pt", {"method": method})
        summary[method] = {key: result.after[key] for key in ("old_accuracy", "new_accuracy", "all_accuracy")}
    print("after adding labels 5-9 (head 5 -> 10 outputs): old classes / new classes / all classes")
    for method, acc in summary.items():
        print(f"  {method:<17} {100 * acc['old_accuracy']:5.1f}% / {100 * acc['new_accuracy']:5.1f}% / {100 * acc['all_accuracy']:5.1f}%")
    return summary


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="forgetlab-add-label-"))
    out.mkdir(parents=True, exist_ok=True)
    main(out)
