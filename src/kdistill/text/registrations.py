"""The text data sets and models in kdistill's registries: imported by DATASETS and MODELS on their
first lookup (`Registry(builtins=...)`), so `kdistill.data` and `kdistill.models` never import the
text package at module level (no import cycle, no optional libraries loaded for image runs).
Building any of them needs the `nlp` extra (transformers); registering them does not."""

from __future__ import annotations

from kdistill.data import DATASETS
from kdistill.models import MODELS
from kdistill.text.datasets import load_sst2_bundle, load_text_files_bundle, load_trec_bundle
from kdistill.text.hf_models import hf_classifier, hf_from_teacher, hf_student
from kdistill.text.simple_students import text_bilstm, text_cnn

DATASETS.register("text-files", "text")(load_text_files_bundle)
DATASETS.register("sst2")(load_sst2_bundle)
DATASETS.register("trec")(load_trec_bundle)

MODELS.register("hf-classifier", "hf")(hf_classifier)
MODELS.register("hf-student")(hf_student)
MODELS.register("hf-from-teacher")(hf_from_teacher)
MODELS.register("text-bilstm", "bilstm")(text_bilstm)
MODELS.register("text-cnn")(text_cnn)
