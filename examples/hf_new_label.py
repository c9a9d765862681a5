"""A Hugging Face text classifier learns a new label, with and without pseudo-rehearsal.

A tiny BERT-style classifier (DistilBERT, 2 layers, hidden size 32, built from a config; its
WordLevel tokenizer trained here on the texts' words) is trained with plain PyTorch on two
labels, ``animal`` and ``food``, and saved with ``save_pretrained`` (``OUT/old``). Then
``finetune`` teaches it a third label, ``vehicle``, from texts of that label alone: the
classifier head grows from 2 to 3 outputs. Naive fine-tuning forgets the old labels;
pseudo-rehearsal (the frozen original's soft labels on old texts) keeps them. Both
fine-tuned models are saved as folders (``OUT/naive``, ``OUT/pseudo-rehearsal``), and
``diagnose`` shows which layers moved in the naive one (``OUT/diag/report.html``).

It also writes a tiny GPT-2-style causal LM trained on the old texts (``OUT/lm``) and
text files for it (``OUT/lm-old.txt``, ``OUT/lm-new.txt``), which docs/TRANSFORMERS.md
fine-tunes and diagnoses.

    python examples/hf_new_label.py [OUTPUT_DIR]

Runs offline in seconds (needs the ``hf`` extra: ``pip install -e ".[hf]"``).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from hf_common import pretrain, save_classifier, save_lm, sentences, topic_rows, write_csv  # noqa: E402

from forgetlab.user import diagnose, finetune, write_report  # noqa: E402
from forgetlab.user.transformers import load_hf_model, load_text_data, save_hf_model  # noqa: E402

LABELS = ["animal", "food", "vehicle"]  # the model knows the first two
METHODS = ("naive", "pseudo-rehearsal")


def main(out_dir: Path) -> dict[str, dict[str, float]]:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    train = topic_rows([0, 1], 60, seed=0)
    save_classifier(out_dir / "old", n_labels=2, labels=LABELS[:2], arch="distilbert")
    pretrain(out_dir / "old", [text for text, _ in train], [label for _, label in train], epochs=10, lr=2e-3)
    write_csv(out_dir / "old.csv", topic_rows([0, 1], 40, seed=1, names=LABELS))  # old labels, by name
    write_csv(out_dir / "new.csv", topic_rows([2], 60, seed=2, names=LABELS))  # only the new label
    model = load_hf_model(out_dir / "old")
    old_data = load_text_data(out_dir / "old.csv", model)  # first: "vehicle" is then the new id 2
    new_data = load_text_data(out_dir / "new.csv", model)
    summary = {}
    for method in METHODS:
        result = finetune(model, new_data, method=method, old_data=old_data, epochs=5, lr=3e-3, batch_size=16)
        print(result.format_report(), end="\n\n")
        save_hf_model(result.model, out_dir / method, {"method": method, "finetune": result.to_dict()})
        summary[method] = {key: result.after[key] for key in ("old_accuracy", "new_accuracy", "all_accuracy")}
    naive = load_hf_model(out_dir / "naive")
    diagnosis = diagnose(model, naive, old_data, new_data, k=4)
    print(diagnosis.format_table(), end="\n\n")
    print(f"report: {write_report(diagnosis, out_dir / 'diag')}")
    save_lm(out_dir / "lm")
    old_texts = sentences(0, 40, seed=3) + sentences(1, 40, seed=3)
    pretrain(out_dir / "lm", old_texts, epochs=8)
    (out_dir / "lm-old.txt").write_text("\n".join(sentences(0, 20, seed=4) + sentences(1, 20, seed=4)) + "\n")
    (out_dir / "lm-new.txt").write_text("\n".join(sentences(2, 40, seed=5)) + "\n")
    print(f"after adding the label 'vehicle' (head 2 -> 3 outputs): old labels / new label / all "
          f"(held-out texts of {out_dir / 'old.csv'} and {out_dir / 'new.csv'})")
    for method, acc in summary.items():
        print(f"  {method:<17} {100 * acc['old_accuracy']:5.1f}% / {100 * acc['new_accuracy']:5.1f}% / {100 * acc['all_accuracy']:5.1f}%")
    return summary


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="forgetlab-hf-"))
    out.mkdir(parents=True, exist_ok=True)
    main(out)
