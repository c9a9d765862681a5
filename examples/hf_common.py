"""Tiny Hugging Face models, a tokenizer and texts made on the fly (no download), for the
examples and the tests: a 2-layer BERT-style classifier and a 2-layer GPT-2-style LM,
hidden size 32, with a WordLevel tokenizer trained by ``tokenizers`` on the words of the
texts. Each text is a few filler words and two words of one topic (animals, food,
vehicles): the topic is the label."""

from __future__ import annotations

import random
from pathlib import Path

import torch

TOPICS = {
    0: ["cat", "dog", "horse", "bird", "fish", "mouse"],
    1: ["apple", "bread", "cheese", "soup", "rice", "cake"],
    2: ["car", "train", "bus", "plane", "boat", "bike"],
}
FILLER = ["the", "a", "my", "this", "is", "was", "very", "big", "small", "red", "old", "new", "here", "there"]


def sentences(label: int, n: int, seed: int = 0) -> list[str]:
    """``n`` short texts about topic ``label`` (its words among filler words)."""
    rng = random.Random(seed * 100 + label)
    out = []
    for _ in range(n):
        words = [rng.choice(FILLER) for _ in range(rng.randint(2, 5))] + [rng.choice(TOPICS[label]) for _ in range(2)]
        rng.shuffle(words)
        out.append(" ".join(words))
    return out


def tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"]))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]")


def all_words() -> list[str]:
    return [" ".join(words) for words in TOPICS.values()] + [" ".join(FILLER)]


def save_classifier(folder: Path, n_labels: int = 2, seed: int = 0, labels: list[str] | None = None,
                    arch: str = "bert") -> Path:
    """A randomly initialised 2-layer classifier (hidden size 32) and its tokenizer, saved in
    ``folder``: BERT (``arch="bert"``) or DistilBERT (``"distilbert"``: no tanh pooler, whose
    saturation keeps a model this small from separating a third label)."""
    from transformers import BertConfig, BertForSequenceClassification, DistilBertConfig, DistilBertForSequenceClassification

    tok = tokenizer(all_words())
    torch.manual_seed(seed)
    names = labels or [f"LABEL_{i}" for i in range(n_labels)]
    labels_kw = dict(num_labels=n_labels, id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    if arch == "distilbert":
        model = DistilBertForSequenceClassification(DistilBertConfig(
            vocab_size=tok.vocab_size, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=64, **labels_kw))
    else:
        model = BertForSequenceClassification(BertConfig(
            vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=64, **labels_kw))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def save_lm(folder: Path, seed: int = 0) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = tokenizer(all_words())
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=tok.vocab_size, n_embd=32, n_layer=2, n_head=2, n_positions=64,
                        bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id, pad_token_id=tok.pad_token_id)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def write_csv(path: Path, rows: list[tuple[str, object]]) -> Path:
    import csv

    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def topic_rows(labels: list[int], n: int, seed: int = 0, names: list[str] | None = None) -> list[tuple[str, object]]:
    rows = [(text, names[label] if names else label) for label in labels for text in sentences(label, n, seed)]
    random.Random(seed).shuffle(rows)
    return rows


def pretrain(folder: Path, texts: list[str], labels: list[int] | None = None, *, epochs: int = 30, lr: float = 3e-3,
             seed: int = 0) -> None:
    """Train the model saved in ``folder`` on ``texts`` (a classifier on ``labels``; a causal
    LM on the texts' next tokens) with a plain PyTorch loop, and save it back there."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    lm = labels is None
    model = (AutoModelForCausalLM if lm else AutoModelForSequenceClassification).from_pretrained(folder)
    enc = tok(texts, padding=True, return_tensors="pt")
    targets = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100) if lm else torch.tensor(labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for index in torch.randperm(len(texts), generator=generator).split(16):
            loss = model(input_ids=enc["input_ids"][index], attention_mask=enc["attention_mask"][index],
                         labels=targets[index]).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.save_pretrained(folder)
