"""Hugging Face models (issue 17): loading, text data, diagnose, finetune with every method
and LoRA, saving; all offline, on tiny models built from configs (a 2-layer BERT
classifier and a 2-layer GPT-2 LM, hidden size 32) with a tokenizer trained here."""

from __future__ import annotations

import copy
import json
import math
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("tokenizers")

sys.path.insert(0, str(Path(__file__).parents[2] / "examples"))
import hf_common as H  # noqa: E402

from forgetlab.analysis import diagonal_fisher, linear_cka, subspace_similarity  # noqa: E402
from forgetlab.cli import main  # noqa: E402
from forgetlab.errors import ConfigError, DataError  # noqa: E402
from forgetlab.user import diagnose, finetune  # noqa: E402
from forgetlab.user.diagnosis import streamed_similarity  # noqa: E402
from forgetlab.user.transformers import (  # noqa: E402
    HFModel, LoRA, align_lengths, load_hf_model, load_text_data, next_token_targets, save_hf_model, truncation_notes,
)

NAMES = ["animal", "food", "vehicle"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    H.save_classifier(root / "cls", n_labels=2, labels=NAMES[:2])
    H.save_lm(root / "lm")
    H.write_csv(root / "old.csv", H.topic_rows([0, 1], 12, seed=1, names=NAMES))
    H.write_csv(root / "new.csv", H.topic_rows([2], 16, seed=2, names=NAMES))
    (root / "old.txt").write_text("\n".join(H.sentences(0, 10, 3) + H.sentences(1, 10, 3)) + "\n")
    (root / "new.txt").write_text("\n".join(H.sentences(2, 16, 4)) + "\n")
    return root


@pytest.fixture(scope="module")
def cls(files):
    return load_hf_model(files / "cls")


@pytest.fixture(scope="module")
def lm(files):
    return load_hf_model(files / "lm")


def test_blocks_are_found_from_the_model(cls, lm, files):
    assert cls.kind == "sequence-classification" and cls.metric == "accuracy" and cls.n_outputs == 2
    assert cls.block_names == ("bert.embeddings", "bert.encoder.layer.0", "bert.encoder.layer.1", "bert.pooler", "classifier")
    assert cls.head_name == "classifier" and cls.label_names == ["animal", "food"] and cls.token_pooling == "mean"
    assert lm.kind == "causal-lm" and lm.metric == "loss" and lm.token_level and lm.token_pooling == "last"
    # GPT-2's lm_head is tied to wte: not a block of its own; every parameter is in one block
    assert lm.block_names == ("transformer.wte", "transformer.wpe", "transformer.h.0", "transformer.h.1", "transformer.ln_f")
    assert lm.head_name == "lm_head" and lm.n_outputs == lm.module.config.vocab_size and "tied" in lm.notes[0]
    covered = {id(p) for block in lm.blocks.values() for p in block.parameters()}
    assert covered == {id(p) for p in lm.module.parameters()}
    chosen = load_hf_model(files / "cls", blocks=["bert.encoder.layer.1", "classifier"])
    assert chosen.block_names == ("bert.encoder.layer.1", "classifier")
    with pytest.raises(ConfigError, match="Unknown block 'bert.nope'"):
        load_hf_model(files / "cls", blocks=["bert.nope"])
    with pytest.raises(DataError, match="no config.json"):
        load_hf_model(files)


def test_text_files_are_tokenised_with_labels_by_name(cls, lm, files, tmp_path):
    model = copy.deepcopy(cls)
    old = load_text_data(files / "old.csv", model)
    assert set(old.y.tolist()) == {0, 1} and old.x.dtype == torch.float32 and old.x.shape[1] == 2
    new = load_text_data(files / "new.csv", model)  # "vehicle" is a name the model lacks: the next id
    assert set(new.y.tolist()) == {2} and model.label_names == NAMES and new.new_label_names == ("vehicle",)
    assert truncation_notes([old, new]) == [f"{files / 'new.csv'}: labels the model's config.id2label lacks are new labels: 'vehicle' = 2"]
    texts = [line for line in (files / "old.txt").read_text().splitlines()]
    first = model.tokenizer(texts[0])["input_ids"]
    assert old.x[:, 1].sum(1).min() >= 3  # [CLS] ... [SEP]: every mask counts its tokens
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": t, "label": float(i % 2)}) for i, t in enumerate(texts[:6])) + "\n")
    data = load_text_data(jsonl, model, max_length=4)
    assert data.y.tolist() == [0, 1, 0, 1, 0, 1] and data.x.shape[2] == 4
    assert data.n_truncated == sum(len(model.tokenizer(t)["input_ids"]) > 4 for t in texts[:6]) > 0
    assert data.x[0, 0, 3] == model.tokenizer.sep_token_id  # truncation keeps the special tokens
    plain = load_text_data(files / "old.txt", lm)
    assert plain.x[0, 0, : len(first)].long().tolist() == first and int(plain.x[0, 1].sum()) == len(first)
    assert plain.y.shape == (20, plain.x.shape[2] - 1)
    assert torch.equal(plain.y, next_token_targets(plain.x)) and int((plain.y == -100).sum()) == int((plain.x[:, 1, 1:] == 0).sum())
    with pytest.raises(DataError, match="no label column 'label'"):
        load_text_data(files / "old.txt", model)
    with pytest.raises(DataError, match="no text column 'body'"):
        load_text_data(files / "old.csv", model, text_column="body")
    long = tmp_path / "long.txt"
    long.write_text(" ".join(["cat"] * 80) + "\n")
    assert load_text_data(long, model, max_length=64, require_labels=False).n_truncated == 1
    with pytest.raises(ConfigError, match="at most the model's 64 positions"):
        load_text_data(long, model, max_length=100, require_labels=False)


def test_padding_and_batching_do_not_change_the_outputs(cls, lm, files):
    for model in (cls, lm):
        data = load_text_data(files / "old.txt", model, require_labels=False)
        long = align_lengths([data])[0].x.shape[2] + 7
        padded = torch.nn.functional.pad(data.x, (0, long - data.x.shape[2]))
        with torch.no_grad():
            together = model(padded[:6])
            alone = [model(data.x[i : i + 1, :, : int(data.x[i, 1].sum())]) for i in range(6)]
        for i, out in enumerate(alone):
            n = int(data.x[i, 1].sum())
            want = together[i] if not model.token_level else together[i, :, : n - 1]
            assert torch.allclose(out[0][..., : want.shape[-1]], want, atol=1e-5), model.kind


def test_lm_score_is_the_mean_next_token_loss_without_padding(lm, files):
    data = load_text_data(files / "old.txt", lm)
    ids, mask = data.x[:, 0].long(), data.x[:, 1].long()
    with torch.no_grad():  # transformers' own loss: labels = ids with -100 at padding
        out = lm.module(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100))
    assert lm.score(data, batch_size=7) == pytest.approx(float(out.loss), rel=1e-5)


def test_per_token_fisher_is_the_mean_squared_gradient_of_each_text(lm, files):
    data = load_text_data(files / "old.txt", lm)
    model = copy.deepcopy(lm)
    # a Conv1D, a LayerNorm (per-layer tricks) and the position embeddings, shared by the batch (the fallback)
    name, norm, positions = "module.transformer.h.1.mlp.c_fc.weight", "module.transformer.ln_f.weight", "module.transformer.wpe.weight"
    for n, p in model.named_parameters():
        p.requires_grad_(n in (name, norm, positions))
    x, y = data.x[:5], data.y[:5]
    fisher = diagonal_fisher(model, x, y)
    params = dict(model.named_parameters())
    for key in (name, norm, positions):
        manual = torch.zeros_like(params[key])
        for i in range(5):
            loss = torch.nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1], reduction="sum")
            manual += torch.autograd.grad(loss, params[key])[0].square() / 5
        assert torch.allclose(fisher[key], manual, rtol=1e-4, atol=1e-9), key
    assert set(fisher) == {name, norm, positions} and float(fisher[norm].sum()) > 0


def test_streamed_similarity_equals_the_in_memory_measures(cls, files):
    data = load_text_data(files / "old.csv", cls)
    other = copy.deepcopy(cls)
    with torch.no_grad():
        weight = other.module.bert.encoder.layer[1].output.dense.weight
        weight.copy_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)))
    names = ("bert.encoder.layer.0", "bert.encoder.layer.1")
    found = streamed_similarity(cls, other, data.x, names, k=3, batch_size=5)  # 24 texts in batches of 5
    with torch.no_grad():
        a, b = cls.block_features(data.x, names), other.block_features(data.x, names)
    for name in names:
        debiased, biased, sim, k, why = found[name]
        assert debiased == pytest.approx(linear_cka(a[name], b[name], debiased=True), abs=1e-6)
        assert biased == pytest.approx(linear_cka(a[name], b[name]), abs=1e-6)
        assert k == 3 and sim == pytest.approx(subspace_similarity(a[name], b[name], 3), abs=1e-5) and not why
    assert found["bert.encoder.layer.0"][0] == pytest.approx(1.0, abs=1e-6) and found["bert.encoder.layer.1"][0] < 0.99


def test_diagnose_a_classifier_that_learned_a_new_label(cls, files):
    model = copy.deepcopy(cls)
    old, new = load_text_data(files / "old.csv", model), load_text_data(files / "new.csv", model)
    same = diagnose(model, copy.deepcopy(model), old, k=3)
    assert all(b.weight_change == 0 and b.cka_debiased == pytest.approx(1.0, abs=1e-6) for b in same.blocks)
    tuned = finetune(model, new, method="naive", old_data=old, epochs=3, lr=1e-2, batch_size=8).model
    assert tuned.n_outputs == 3 and isinstance(tuned, HFModel) and tuned.label_names == NAMES
    result = diagnose(model, tuned, old, new, k=3)
    assert result.metric == "accuracy" and result.new_task["new"] > 0.9 and result.new_task["old"] == 0.0
    assert "classifier" in result.skipped and "mean over non-padding tokens" in result.representation
    layers = [b for b in result.blocks if b.block.startswith("bert.encoder")]
    assert all(0 < b.weight_change and math.isfinite(b.cka_debiased) and b.subspace_k == 3 for b in layers)
    text = result.format_table()
    assert "old acc if reset" in text and "bert.encoder.layer.1" in text


def test_diagnose_a_language_model_by_loss(lm, files):
    old, new = load_text_data(files / "old.txt", lm), load_text_data(files / "new.txt", lm)
    tuned = finetune(lm, new, method="naive", epochs=3, lr=1e-2, batch_size=8).model
    result = diagnose(lm, tuned, old, new, k=3)
    assert result.metric == "loss" and result.old_task["old"] == pytest.approx(lm.score(old), rel=1e-6)
    assert result.new_task["new"] < result.new_task["old"]  # NEW learned the new texts
    everything = [r for r in result.resets if r.kind == "bottom-up" and len(r.blocks) == len(lm.block_names)][0]
    assert everything.old_accuracy == pytest.approx(result.old_task["old"], rel=1e-6)  # every block rewound = OLD
    assert "loss (perplexity)" in result.format_table() and "last non-padding token" in result.representation
    d = result.to_dict()
    assert d["metric"] == "loss" and d["blocks"][0]["cka_debiased"] is None  # wte's last token is always [SEP]
    json.dumps(d, allow_nan=False)


@pytest.mark.parametrize("method", ["naive", "pseudo-rehearsal", "ewc", "l2", "replay", "lwf"])
def test_finetune_a_classifier_with_each_method(cls, files, method):
    model = copy.deepcopy(cls)
    old, new = load_text_data(files / "old.csv", model), load_text_data(files / "new.csv", model)
    params = {"ewc": {"lam": 1e3}, "l2": {"lam": 1.0}}.get(method)
    result = finetune(model, new, method=method, params=params, old_data=old, epochs=2, lr=1e-2, batch_size=8)
    assert result.n_outputs == 3 and result.metric == "accuracy" and result.after["new_accuracy"] > 0.5
    before = dict(model.module.named_parameters())
    moved = sum(float((p.detach() - before[n][: p.shape[0]].detach()).norm()) for n, p in result.model.module.named_parameters()
                if n.startswith("bert.encoder"))
    assert moved > 0


@pytest.mark.parametrize("method", ["naive", "pseudo-rehearsal", "ewc", "l2", "replay", "lwf"])
def test_finetune_a_language_model_with_each_method(lm, files, method):
    old, new = load_text_data(files / "old.txt", lm), load_text_data(files / "new.txt", lm)
    params = {"ewc": {"lam": 10.0, "fisher_samples": 8}, "l2": {"lam": 1.0}}.get(method)
    result = finetune(lm, new, method=method, params=params, old_data=old, epochs=2, lr=1e-2, batch_size=8)
    assert result.metric == "loss" and result.after["new_accuracy"] < result.before["new_accuracy"]
    assert "perplexity" in result.conclusion and "nats per token" in result.format_report()


def test_keeping_methods_forget_less_than_naive_on_the_language_model(lm, files):
    old, new = load_text_data(files / "old.txt", lm), load_text_data(files / "new.txt", lm)
    rise = {}
    for method in ("naive", "pseudo-rehearsal", "replay"):
        r = finetune(lm, new, method=method, old_data=old, epochs=4, lr=1e-2, batch_size=8)
        rise[method] = r.after["old_accuracy"] - r.before["old_accuracy"]
    assert rise["pseudo-rehearsal"] < rise["naive"] and rise["replay"] < rise["naive"], rise


@pytest.mark.parametrize("method", ["naive", "pseudo-rehearsal"])
def test_lora_trains_adapters_only_and_merges_back(cls, lm, files, method):
    for model, name in ((cls, "csv"), (lm, "txt")):
        old, new = load_text_data(files / f"old.{name}", model), load_text_data(files / f"new.{name}", model)
        result = finetune(copy.deepcopy(model), new, method=method, old_data=old, epochs=2, lr=1e-2, batch_size=8,
                          lora=LoRA(r=2))
        tuned, original = result.model.module.state_dict(), model.module.state_dict()
        assert set(tuned) == set(original) and result.lora["r"] == 2  # merged: the original architecture
        embeddings = [k for k in original if "embeddings" in k or "wte" in k or "wpe" in k]
        assert embeddings and all(torch.equal(tuned[k], original[k]) for k in embeddings)  # frozen
        changed = [k for k in original if tuned[k].shape == original[k].shape and not torch.equal(tuned[k], original[k])]
        assert changed and any("LoRA r=2" in note for note in result.notes)


def test_a_grown_classifier_saves_and_loads_back(cls, files, tmp_path):
    model = copy.deepcopy(cls)
    old, new = load_text_data(files / "old.csv", model), load_text_data(files / "new.csv", model)
    tuned = finetune(model, new, method="pseudo-rehearsal", old_data=old, epochs=1, batch_size=8).model
    save_hf_model(tuned, tmp_path / "out", {"method": "pseudo-rehearsal"})
    back = load_hf_model(tmp_path / "out")
    assert back.n_outputs == 3 and back.label_names == NAMES and back.block_names == tuned.block_names
    with torch.no_grad():
        assert torch.allclose(back(old.x), tuned.eval()(old.x), atol=1e-6)
    assert json.loads((tmp_path / "out" / "forgetlab.json").read_text())["method"] == "pseudo-rehearsal"


def test_the_commands_take_model_folders(files, tmp_path, capsys):
    out = tmp_path / "tuned"
    assert main(["finetune", str(files / "lm"), "--new-data", str(files / "new.txt"), "--old-data", str(files / "old.txt"),
                 "--method", "lwf", "--epochs", "1", "--batch-size", "8", "--lora", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Fine-tuned with lwf + LoRA (r=2)" in text and (out / "config.json").is_file()
    assert main(["diagnose", str(files / "lm"), str(out), "--data", str(files / "old.txt"), "--max-length", "6",
                 "--token-pooling", "mean", "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["metric"] == "loss" and "truncated to 6 tokens" in " ".join(result["notes"])
    assert "mean over non-padding tokens" in result["representation"]
    assert main(["analyze", "cka", str(files / "lm"), str(out), "--data", str(files / "old.txt"), "--out",
                 str(tmp_path / "cka"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert {r["block"] for r in rows} >= {"transformer.h.0", "transformer.h.1"}
    assert main(["finetune", str(files / "cls"), "--new-data", str(files / "new.csv"), "--out", str(files / "old.csv")]) == 2
    assert "must be a folder" in capsys.readouterr().err


def test_diagnose_takes_other_blocks_and_keeps_the_model_kind(lm, files):
    old = load_text_data(files / "old.txt", lm)
    result = diagnose(lm, copy.deepcopy(lm), old, blocks=["transformer.h.1", "transformer.ln_f"], k=2)
    assert [b.block for b in result.blocks] == ["transformer.h.1", "transformer.ln_f"] and result.metric == "loss"
    assert all(r.old_accuracy == pytest.approx(result.old_task["old"]) for r in result.resets)


def test_a_classifier_head_on_every_token_is_refused():
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from forgetlab.errors import IncompatibleError

    module = GPT2ForSequenceClassification(GPT2Config(vocab_size=20, n_embd=8, n_layer=1, n_head=2, n_positions=8,
                                                      num_labels=2, pad_token_id=0))
    with pytest.raises(IncompatibleError, match="'score' of GPT2ForSequenceClassification runs on every token"):
        HFModel(module, "sequence-classification")


def test_without_old_data_a_classifier_reports_agreement_and_an_lm_an_unknown_old_loss(cls, lm, files, tmp_path, capsys):
    model = copy.deepcopy(cls)
    result = finetune(model, load_text_data(files / "new.csv", model), method="pseudo-rehearsal", epochs=1, batch_size=8)
    assert result.before["old_accuracy"] is None and result.before["revision_agreement"] == 1.0
    assert result.after["revision_agreement"] is not None and "agreement" in result.format_report()
    tuned = finetune(lm, load_text_data(files / "new.txt", lm), method="lwf", epochs=1, batch_size=8)
    assert tuned.after["old_accuracy"] is None and tuned.after["revision_agreement"] is None
    assert "old-task loss is unknown" in tuned.conclusion
    assert main(["analyze", "subspace", str(files / "cls"), str(files / "cls"), "--data", str(files / "old.csv"), "--k", "3",
                 "--out", str(tmp_path / "sub"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    layers = [r for r in rows if r["block"].startswith("bert.encoder")]
    assert layers and all(r["value"] == pytest.approx(1.0, abs=1e-6) and r["k"] == 3 for r in layers)
