"""Image-to-outputs wrappers (vt_mm/models/wrappers.py)."""
import pytest
import torch.nn as nn

from vt_mm import analysis


def test_toolbox_of_model():
    from mmpretrain.models import ImageClassifier
    classifier = ImageClassifier.__new__(ImageClassifier)  # the class is what counts
    assert analysis.toolbox_of_model(classifier) == 'mmpretrain'
    with pytest.raises(TypeError, match=r"^Linear is not an mmseg, mmdet or mmpretrain model; "
                       r"pass toolbox='mmseg' \| 'mmdet' \| 'mmpretrain'$"):
        analysis.toolbox_of_model(nn.Linear(1, 1))


def test_image_to_outputs_follows_the_models_mode():
    model = nn.Linear(2, 2)
    assert analysis.ImageToOutputs(model.eval(), 'mmseg').training is False
    assert analysis.ImageToOutputs(model.train(), 'mmseg').training is True
