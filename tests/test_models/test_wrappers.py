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


def test_each_toolbox_is_found_and_gets_its_own_forward():
    """The toolbox comes from the base class (its module's package), and the wrapper calls
    that toolbox's raw forward: mmseg's ``_forward(x)``, mmdet's ``_forward(x, samples)`` with
    the image as its own unscaled original, mmpretrain's ``forward(x, mode='tensor')``."""
    import torch
    from mmdet.models import SingleStageDetector
    from mmpretrain.models import ImageClassifier
    from mmseg.models import EncoderDecoder

    class Seg(EncoderDecoder):
        def __init__(self):
            nn.Module.__init__(self)

        def _forward(self, x, data_samples=None):
            return 'mmseg', x.shape, data_samples

    class Det(SingleStageDetector):
        def __init__(self):
            nn.Module.__init__(self)

        def _forward(self, x, data_samples=None):
            return 'mmdet', x.shape, data_samples

    class Cls(ImageClassifier):
        def __init__(self):
            nn.Module.__init__(self)

        def forward(self, x, mode='predict'):
            return 'mmpretrain', x.shape, mode

    x = torch.zeros(2, 3, 24, 40)
    for model, toolbox in ((Seg(), 'mmseg'), (Det(), 'mmdet'), (Cls(), 'mmpretrain')):
        assert analysis.toolbox_of_model(model) == toolbox
        wrapper = analysis.ImageToOutputs(model)
        assert wrapper.toolbox == toolbox
        name, shape, extra = wrapper(x)
        assert name == toolbox and shape == x.shape
        if toolbox == 'mmseg':
            assert extra is None
        elif toolbox == 'mmpretrain':
            assert extra == 'tensor'
        else:
            assert len(extra) == 2
            for sample in extra:
                assert sample.metainfo == dict(
                    img_shape=(24, 40), ori_shape=(24, 40), pad_shape=(24, 40),
                    batch_input_shape=(24, 40), scale_factor=(1.0, 1.0))
    # an explicit toolbox wins over the class
    assert analysis.ImageToOutputs(Seg(), 'mmpretrain').toolbox == 'mmpretrain'
