"""An optional, stronger PERSON detector: a transformers token-classification model, behind Presidio's
recognizer interface.

The embedded spaCy pipeline (en_core_web_sm) is the limit on names that nobody introduces (PERSON
recall 0.72 on presidio-evaluator's templates, see RESULTS.md), and no larger English NER model ships
as a PyPI package. A user who has one on disk (a fine-tuned BERT/RoBERTa/DeBERTa NER checkpoint,
for example) sets the curation config's `ner_model` to its folder; `ner_labels` names the model's
labels that mean a person (B-/I- prefixes are stripped). It is off by default, and nothing is ever
downloaded: the model is loaded with `local_files_only`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from presidio_analyzer import AnalysisExplanation, EntityRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

DEFAULT_NER_LABELS = ("PER", "PERSON")


class TransformersPersonRecognizer(EntityRecognizer):
    """PERSON spans from a local token-classification model."""

    def __init__(self, model: str, labels: tuple[str, ...] = DEFAULT_NER_LABELS, score: float = 0.85,
                 min_model_score: float = 0.5) -> None:
        self.model = model
        self.labels = {label.upper() for label in labels}
        self.score = score
        self.min_model_score = min_model_score
        self._pipeline: Any = None
        super().__init__(supported_entities=["PERSON"], name="TransformersPersonRecognizer",
                         supported_language="en")

    def load(self) -> None:
        pass  # loaded on first use, so that building the analyzer stays cheap

    def pipeline(self) -> Any:
        if self._pipeline is None:
            from slm_pipeline.core.curate.analyzer import PiiSetupError

            if not Path(self.model).exists():
                raise PiiSetupError(
                    f"ner_model {self.model!r} is not a folder on this machine; nothing is downloaded at run "
                    f"time. Point ner_model at a saved transformers token-classification model, or unset it.")
            from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

            tokenizer = AutoTokenizer.from_pretrained(self.model, local_files_only=True)
            model = AutoModelForTokenClassification.from_pretrained(self.model, local_files_only=True)
            self._pipeline = pipeline("token-classification", model=model, tokenizer=tokenizer,
                                      aggregation_strategy="simple", device=-1)
        return self._pipeline

    def analyze(self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
                ) -> list[RecognizerResult]:
        if "PERSON" not in entities or not text.strip():
            return []
        results = []
        for found in self.pipeline()(text):
            label = str(found.get("entity_group") or found.get("entity") or "").upper()
            label = label[2:] if label[:2] in ("B-", "I-") else label
            if label not in self.labels or float(found["score"]) < self.min_model_score:
                continue
            start, end = int(found["start"]), int(found["end"])
            while start < end and text[start].isspace():
                start += 1
            if end > start:
                results.append(RecognizerResult(
                    "PERSON", start, end, self.score,
                    analysis_explanation=AnalysisExplanation(recognizer=self.name, original_score=self.score),
                    recognition_metadata={RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                                          RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id},
                ))
        return results
