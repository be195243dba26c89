"""torch.compile: every family's forward is one graph (no Dynamo graph break), compiled outputs
and gradients equal eager, and mmengine's ``compile`` switch trains each family's config.

Compilation goes through ``aot_eager`` here (Dynamo's graph capture and AOTAutograd's
functionalised forward/backward, what Inductor compiles, without its C++ code generation,
which takes minutes per model on 2 cores); Inductor's compile and step times are measured by
``benchmarks/compile_benchmark.py`` (benchmarks/reports/compile.md).
"""
import math

import pytest
import torch
import torch._dynamo as dynamo
from helpers.compile_configs import FAMILY_CONFIGS, write_family_config
from mmengine.config import Config, ConfigDict

from vt_mm.models.backbones import VTResNet
from vt_mm.models.backbones.pyramid_tnt import PyramidTNT
from vt_mm.models.backbones.seaformer import SeaFormer
from vt_mm.models.necks.vt_fpn import VTFPN


def _vtfpn():
    torch.manual_seed(0)
    neck = VTFPN([16, 32, 64, 128], 32, 4, num_tokens=4, token_channels=32)
    for m in neck.modules():  # non-zero biases: the fused laterals add them (see test_vtfpn)
        if isinstance(m, torch.nn.Conv2d) and m.bias is not None:
            torch.nn.init.normal_(m.bias)
    # 66 -> 33, 17, 9: the ceil-divided pyramid where nearest upsampling is not a repeat
    feats = [torch.randn(2, c, s, s) for c, s in zip([16, 32, 64, 128], [66, 33, 17, 9])]
    return neck, (feats, )


def _image_model(cls, **kwargs):
    def make():
        torch.manual_seed(0)
        return cls(**kwargs), (torch.randn(2, 3, 64, 64), )
    return make


MODELS = {
    'vtfpn': _vtfpn,
    'vt_resnet': _image_model(VTResNet, depth=18),
    'pyramid_tnt': _image_model(PyramidTNT, arch='tiny', drop_path_rate=0.0),  # no randomness
    'seaformer': _image_model(SeaFormer, arch='tiny', drop_path_rate=0.0),
}


def _outputs(out):
    return [out] if isinstance(out, torch.Tensor) else list(out)


@pytest.mark.parametrize('family', list(MODELS))
def test_eval_forward_is_one_graph(family):
    """No graph break in eval mode (training mode: ``fullgraph=True`` below): Python-side shape
    logic (VT-FPN's nearest-repeat test, which broke the graph 6 times with an ``aten.equal``
    data dependence) stays out of compiled code."""
    model, args = MODELS[family]()
    model.eval()
    dynamo.reset()
    explanation = dynamo.explain(model)(*args)
    assert explanation.graph_break_count == 0, [b.reason for b in explanation.break_reasons]
    assert explanation.graph_count == 1


@pytest.mark.parametrize('family', list(MODELS))
def test_compiled_outputs_and_gradients_equal_eager(family):
    """Compiled forward and backward (``aot_eager``: the functionalised graphs, so in-place fast
    paths are exercised as compiled code runs them) against eager, in training mode, as one
    graph (``fullgraph=True`` fails on any graph break)."""
    model, args = MODELS[family]()
    model.train()
    dynamo.reset()
    compiled = torch.compile(model, backend='aot_eager', fullgraph=True)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    eager_out = _outputs(model(*args))
    eager_grads = torch.autograd.grad(sum(o.square().mean() for o in eager_out),
                                      list(model.parameters()), allow_unused=True)
    model.load_state_dict(state)  # BN running statistics as before the eager step
    compiled_out = _outputs(compiled(*args))
    grads = torch.autograd.grad(sum(o.square().mean() for o in compiled_out),
                                list(model.parameters()), allow_unused=True)
    dynamo.reset()
    assert len(compiled_out) == len(eager_out)
    for e, c in zip(eager_out, compiled_out):
        torch.testing.assert_close(c, e, atol=1e-5, rtol=1e-5)
    names = [n for n, _ in model.named_parameters()]
    # float rounding of a reordered backward, amplified through train-mode BN at batch 2, against
    # the largest gradient of the model (a BN bias before another BN has a zero gradient up to
    # that rounding)
    scale = max(float(e.abs().max()) for e in eager_grads if e is not None)
    for name, e, g in zip(names, eager_grads, grads):
        if e is None:
            assert g is None, name
            continue
        torch.testing.assert_close(g, e, atol=1e-4 * scale, rtol=1e-3,
                                   msg=lambda m: f'{name} (largest gradient {scale:.3g}): {m}')


@pytest.mark.slow
@pytest.mark.parametrize('family', list(FAMILY_CONFIGS))
def test_mmengine_compile_trains_two_iterations(family, tmp_path):
    """mmengine's ``compile`` switch on one config per family: ``NetworkCompileHook`` (from the
    runtime base) compiles the networks instead of mmengine's train step, and two iterations
    train through the compiled networks."""
    from mmengine.runner import Runner
    cfg = Config.fromfile(write_family_config(family, str(tmp_path)))
    cfg.work_dir = str(tmp_path / 'work')
    # Dynamo's capture (where mmengine's step failed); AOTAutograd of the models:
    # test_compiled_outputs_and_gradients_equal_eager
    cfg.compile = dict(backend='eager')
    cfg.log_level = 'WARNING'
    runner = Runner.from_cfg(cfg)
    runner.train()
    losses = runner.message_hub.get_scalar('train/loss').data[0]
    assert runner.iter == 2 and len(losses) == 2 and all(map(math.isfinite, losses))
    model = runner.model
    assert 'train_step' not in vars(model)  # mmengine's compiled step was undone
    compiled = [n for n, m in model.named_children()
                if hasattr(m.forward, '_torchdynamo_orig_callable')]
    expected = {'vtfpn': ['backbone', 'neck', 'decode_head'],
                'seaformer': ['backbone', 'decode_head']}.get(family, ['backbone', 'neck', 'head'])
    assert sorted(compiled) == sorted(expected), compiled


def test_dynamo_fails_on_mmengine_param_groups(tmp_path):
    """One failure ``NetworkCompileHook`` avoids, in mmengine + torch alone (no vt-mm model):
    an optimizer built by mmengine's constructor with ``paramwise_cfg`` holds ``ConfigDict``
    parameter groups, and Dynamo cannot trace its step; plain dicts can."""
    from mmengine.optim import build_optim_wrapper
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    cfg = dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.01),
               paramwise_cfg=dict(norm_decay_mult=0.0))
    wrapper = build_optim_wrapper(model, ConfigDict(cfg))  # what the runner passes
    assert len(wrapper.optimizer.param_groups) > 1
    model(torch.randn(2, 3, 4, 4)).sum().backward()
    step = torch.compile(wrapper.optimizer.step, backend='eager')
    dynamo.reset()
    with pytest.raises(Exception, match='UserDefinedDictVariable'):
        step()
    groups = wrapper.optimizer.param_groups
    groups[:] = [dict(g) for g in groups]
    dynamo.reset()
    step()
    dynamo.reset()


# square first (a square crop must not tie height to width), then sizes of 3 and 4 digits
VARYING_SIZES = [(96, 96), (160, 128), (200, 72), (1000, 999)]


def _counting_backend(log):
    """A Dynamo backend that records each graph it is given (its number of nodes) and runs it as
    traced."""
    def backend(gm, example_inputs):
        log.append(len(gm.graph.nodes))
        return gm.forward
    return backend


@pytest.fixture
def duck_shape_restored():
    """compile_networks turns Dynamo's duck sizing off for the process: back to torch's default
    after the test."""
    import torch.fx.experimental._config as fx_config
    with fx_config.patch(use_duck_shape=True):
        yield


def _build(family, tmp_path, size=64):
    from mmengine.registry import MODELS, init_default_scope
    cfg = Config.fromfile(write_family_config(family, str(tmp_path), size))
    init_default_scope(cfg.default_scope)
    torch.manual_seed(0)
    return MODELS.build(cfg.model)


@pytest.mark.slow  # Dynamo traces each network: 10-40 s per family
@pytest.mark.parametrize('family', ['vtfpn', 'seaformer', 'vt_resnet'])
def test_dynamic_compile_captures_one_graph_for_any_size(family, tmp_path, duck_shape_restored):
    """``compile=dict(dynamic=True)``: after the first batch, training batches of other sizes
    (square, then not; 3 and 4 digits) run the graphs Dynamo captured for the first one: no
    guard of the models' own code ties them to a size (Dynamo's duck sizing did, at the first
    non-square batch after square crops). Validation (eval mode) runs eagerly, compiling
    nothing."""
    import torch.fx.experimental._config as fx_config

    from vt_mm.engine.hooks import compile_networks
    model = _build(family, tmp_path).train()
    graphs = []
    dynamo.reset()
    parts = compile_networks(model, dict(backend=_counting_backend(graphs), dynamic=True))
    assert fx_config.use_duck_shape is False
    for size in VARYING_SIZES:
        out = model(torch.randn(2, 3, *size), mode='tensor')
        assert all(torch.isfinite(o).all() for o in _outputs(out))
        assert len(graphs) == len(parts), f'{size}: recompiled ({graphs})'
    model.eval()
    with torch.no_grad():
        for size in VARYING_SIZES[1:3]:
            model(torch.randn(2, 3, *size), mode='tensor')
    assert len(graphs) == len(parts), graphs
    dynamo.reset()


@pytest.mark.slow  # Dynamo traces VT-ResNet twice: 15 s
def test_static_compile_compiles_each_training_size_once(tmp_path, duck_shape_restored):
    """The default (static sizes): a new training size compiles the networks whose input size
    changed again, a size seen before compiles nothing, and validation compiles nothing."""
    from vt_mm.engine.hooks import compile_networks
    model = _build('vt_resnet', tmp_path).train()
    graphs = []
    dynamo.reset()
    parts = compile_networks(model, dict(backend=_counting_backend(graphs)))
    counts = []
    for size in VARYING_SIZES[:2] + VARYING_SIZES[:1]:
        model(torch.randn(2, 3, *size), mode='tensor')
        counts.append(len(graphs))
    assert counts[0] == len(parts) and counts[1] > counts[0] and counts[2] == counts[1], graphs
    assert graphs[len(parts)] == graphs[0]  # the backbone's graph again, for the new size
    model.eval()
    with torch.no_grad():
        model(torch.randn(2, 3, *VARYING_SIZES[2]), mode='tensor')
    assert len(graphs) == counts[-1]
    dynamo.reset()


def test_networks_compile_for_training_and_run_eagerly_in_eval(tmp_path, monkeypatch,
                                                                duck_shape_restored):
    """What each network is compiled with (static sizes unless the options say ``dynamic``,
    the user's value winning both ways) and which forward runs: the compiled one in training
    mode, the module's own in eval mode, with the same arguments."""
    from vt_mm.engine.hooks import compile_networks
    options, calls = [], []

    def fake_compile(fn, **kw):
        options.append(kw)

        def compiled(*args, **kwargs):
            calls.append(('compiled', args, kwargs))
            return fn(*args, **kwargs)
        return compiled

    monkeypatch.setattr(torch, 'compile', fake_compile)
    model = _build('vt_resnet', tmp_path / 'a')
    assert compile_networks(model, dict(backend='eager')) == ['backbone', 'neck', 'head']
    assert options == [dict(dynamic=False, backend='eager')] * 3
    for dynamic in (True, False):
        options.clear()
        compile_networks(_build('vt_resnet', tmp_path / str(dynamic)), dict(dynamic=dynamic))
        assert options == [dict(dynamic=dynamic)] * 3
    x = torch.randn(1, 3, 32, 32)
    model.train()
    train_out = model.backbone(x)
    assert [c[0] for c in calls] == ['compiled'] and calls[0][1][0] is x
    model.eval()
    calls.clear()
    eval_out = model.backbone(x)
    assert calls == [] and len(eval_out) == len(train_out)
