"""The optional transformers NER detector behind the analyzer's interface (issue 17), with a tiny
randomly initialised BERT built here: no model hub is touched."""

from __future__ import annotations

from pathlib import Path

import pytest

from slm_pipeline.core.curate.analyzer import AnalyzerConfig, PiiSetupError, SegmentAnalyzer


@pytest.fixture(scope="module")
def always_person_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-layer BERT whose classifier says B-PER for every token."""
    import torch
    from transformers import BertConfig, BertForTokenClassification, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-ner")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "met", "odile", "at", "the", "quay", "."]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, num_labels=3,
                        id2label={0: "O", 1: "B-PER", 2: "I-PER"}, label2id={"O": 0, "B-PER": 1, "I-PER": 2})
    torch.manual_seed(0)
    model = BertForTokenClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, 10.0, 0.0]))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def persons(config: AnalyzerConfig, text: str) -> set[str]:
    analyzer = SegmentAnalyzer(config, workers=1)
    try:
        [found] = analyzer.analyze([text])
    finally:
        analyzer.close()
    return {text[s:e] for s, e, t, _ in found if t == "PERSON"}


def test_a_configured_model_adds_its_person_spans(always_person_model: Path):
    text = "Met Odile at the Quay."
    with_model = persons(AnalyzerConfig(entities=("PERSON",), ner_model=str(always_person_model)), text)
    assert {"Odile", "Quay"} <= with_model
    other_labels = persons(AnalyzerConfig(entities=("PERSON",), ner_model=str(always_person_model),
                                          ner_labels=("LOC",)), text)
    assert not {"Quay"} & other_labels  # only the labels named in ner_labels mean a person


def test_a_missing_model_fails_with_what_to_do(tmp_path: Path):
    with pytest.raises(PiiSetupError, match="nothing is downloaded"):
        persons(AnalyzerConfig(ner_model=str(tmp_path / "no-such-model")), "Met Odile at the Quay.")
