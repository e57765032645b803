"""The CIFAR ResNets load the shared pretrained checkpoints and reproduce their JPEG test accuracy.

The reference figures (about 81 % for resnet20 to 83 % for resnet56 on the JPEG test set) are the
independent evaluation in ../shared/data/README.md; they are below the checkpoints' stored 91.8 /
93.6 % because the JPEG copy is blurrier than CIFAR-10's PNGs.
"""

from __future__ import annotations

import pytest
import torch
from conftest import require_shared

from kdistill.data import load_image_folder_bundle
from kdistill.data.transforms import Normalize
from kdistill.engine import evaluate_model
from kdistill.engine.distiller import Distiller
from kdistill.models import build_model, load_weights, read_weights

# independent evaluation (shared data README): resnet20 ~81 %, resnet56 ~83 %
REFERENCE = {20: 0.81, 56: 0.83}


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("depth", [20, 56])
def test_pretrained_teacher_accuracy_on_jpeg_test_set(depth):
    teachers = require_shared("teachers")
    bundle = load_image_folder_bundle(require_shared("cifar10-jpeg.tar.gz"))
    assert bundle.classes[:3] == ["airplane", "automobile", "bird"]
    model = load_weights(build_model(f"resnet{depth}", 10, (3, 32, 32)), teachers / f"cifar10-resnet{depth}.th")
    loader = Distiller(None, model, progress=False, eval_batch_size=1000).make_loader(bundle.test, train=False)
    accuracy = evaluate_model(model, loader, torch.device("cpu"), Normalize(bundle.mean, bundle.std))["acc"]
    assert abs(accuracy - REFERENCE[depth]) <= 0.01 + 0.005, accuracy  # within a point of ~81 / ~83 %


@pytest.mark.data
def test_checkpoint_prefix_is_stripped():
    state = read_weights(require_shared("teachers", "cifar10-resnet20.th"))
    assert "conv1.weight" in state and not any(k.startswith("module.") for k in state)
