"""tools/analysis_tools/vis_token_attention.py's token statistics (level_statistics): what the
visual tokens of a VT-FPN carry, each statistic against its definition."""
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import load_script
from helpers.necks import features as _features
from helpers.necks import level_features as _level_features
from helpers.necks import neck as _neck
from helpers.necks import small_neck as _small_neck

level_statistics = load_script('tools/analysis_tools/vis_token_attention.py').level_statistics


def test_token_statistics_detect_collapsed_tokens():
    """Zero tokenizer filters give uniform attention, so every token is the image mean:
    entropy 1, peak 1, similarity 1. Trained-looking (sharp) filters give distinct tokens."""
    feats = _features(64, 48)
    torch.manual_seed(0)
    neck = _small_neck(with_pos_encoding=False).eval()
    with torch.no_grad():
        for tok in neck.tokenizers:
            tok.token_coef.weight.zero_()
            tok.token_coef.bias.zero_()
        collapsed = level_statistics(neck, feats)
        for tok in neck.tokenizers:
            tok.token_coef.weight.normal_(0, 10.0)
        sharp = level_statistics(neck, feats)
    assert len(collapsed) == 4
    for level in collapsed:
        assert level['attention_entropy'] == pytest.approx(1.0, abs=1e-5)
        assert level['attention_peak'] == pytest.approx(1.0, abs=1e-4)
        assert level['token_similarity'] == pytest.approx(1.0, abs=1e-4)
        # identical tokens have identical keys: every pixel mixes them uniformly
        assert level['projector_entropy'] == pytest.approx(1.0, abs=1e-5)
        assert level['projection_ratio'] > 0
    for level in sharp[:2]:  # the finer levels have enough pixels to choose from
        assert level['attention_entropy'] < 0.9
        assert level['attention_peak'] > 2
        assert level['token_similarity'] < 0.9
        assert level['projector_entropy'] < 1.0 - 1e-4


def test_token_statistics_exact_values():
    """Uniform tokenizer attention (zero token coefficients) gives entropy 1 and peak 1, every
    token the same (similarity 1); zero projector values add nothing (ratio 0); random ones
    add the ratio of norms written out."""
    neck = _neck(num_transformer_layers=0, with_pos_encoding=False, zero_init_projection=True)
    for tok in neck.tokenizers:
        torch.nn.init.zeros_(tok.token_coef.weight)
        torch.nn.init.zeros_(tok.token_coef.bias)
    feats = _level_features(64, 64, n=2)
    with torch.no_grad():
        stats = level_statistics(neck, feats)
    assert len(stats) == 4
    for s in stats:
        assert s['attention_entropy'] == pytest.approx(1, abs=1e-6)
        assert s['attention_peak'] == pytest.approx(1, abs=1e-5)
        assert s['token_similarity'] == pytest.approx(1, abs=1e-5)
        assert s['projection_ratio'] == 0
        assert 0 <= s['projector_entropy'] <= 1 + 1e-6
    # projector values non-zero: the ratio is the added norm over the lateral's norm
    for p in neck.projectors:
        torch.nn.init.normal_(p.value.weight)
    with torch.no_grad():
        stats = level_statistics(neck, feats)
        laterals = neck.lateral_features(feats)
        tokens, _ = neck.tokenize(laterals)
        added = neck.projectors[1](laterals[1], tokens[1]) - laterals[1]
    expected = (added.flatten(1).norm(dim=1) / laterals[1].flatten(1).norm(dim=1)).mean()
    assert stats[1]['projection_ratio'] == pytest.approx(float(expected), rel=1e-5)
    assert stats[1]['projection_ratio'] > 0


def test_token_statistics_keys_ranges_and_a_single_token():
    neck = _neck(num_transformer_layers=0, with_pos_encoding=False)
    stats_keys = {'attention_entropy', 'attention_peak', 'token_similarity',
                  'projector_entropy', 'projection_ratio'}
    with torch.no_grad():
        stats = level_statistics(neck, _level_features(64, 64))
    assert all(set(s) == stats_keys for s in stats)
    assert all(-1 <= s['token_similarity'] <= 1 for s in stats)
    # normalised entropy of L=1 tokens is defined as 1 (no choice)
    single = _neck(num_tokens=1, num_transformer_layers=0)
    with torch.no_grad():
        assert level_statistics(single, _level_features(64, 64))[0]['projector_entropy'] == 1.0
    assert math.isfinite(stats[0]['attention_peak'])


def _token_path(neck, feats):
    """level_statistics and, beside it, the intermediate maps it is defined on."""
    with torch.no_grad():
        stats = level_statistics(neck, feats)
        laterals = neck.lateral_features(feats)
        tokens, attns = neck.tokenize(laterals)
        return stats, laterals, tokens, attns, neck.mix_tokens(tokens)


def test_token_statistics_match_their_definitions():
    """Each statistic recomputed from its docstring on a random neck with 2 tokens per level
    (where a 2-way entropy must not be taken for the single-token case)."""
    neck = _neck(num_tokens=2)
    feats = _level_features(64, 64, n=2)
    stats, laterals, tokens, attns, mixed = _token_path(neck, feats)
    for level, s in enumerate(stats):
        p = attns[level].flatten(2)  # N, L, HW
        hw = p.shape[-1]
        entropy = -(p * p.clamp_min(1e-12).log()).sum(-1).mean() / math.log(hw)
        assert s['attention_entropy'] == pytest.approx(float(entropy), rel=1e-5)
        assert s['attention_peak'] == pytest.approx(float((p.max(-1).values * hw).mean()),
                                                    rel=1e-5)
        tok = tokens[level]  # N, C, 2
        cosine = F.cosine_similarity(tok[:, :, 0], tok[:, :, 1], dim=1).mean()
        assert s['token_similarity'] == pytest.approx(float(cosine), rel=1e-4, abs=1e-6)
        with torch.no_grad():
            q = neck.projectors[level].attention(laterals[level], mixed[level])
        two_way = -(q * q.clamp_min(1e-12).log()).sum(-1).mean() / math.log(2)
        assert q.shape[-1] == 2 and float(two_way) < 1 - 1e-4
        assert s['projector_entropy'] == pytest.approx(float(two_way), rel=1e-5)


def test_projection_ratio_of_a_faint_map_is_not_clamped():
    """projection_ratio divides by the lateral's norm, clamped only against zero: a map with
    a norm below 1 keeps its ratio."""
    neck = _neck()
    for p in neck.parameters():
        p.data.mul_(1e-3)
    feats = [f * 1e-3 for f in _level_features(32, 32)]
    stats, laterals, _, _, mixed = _token_path(neck, feats)
    for level, s in enumerate(stats):
        x = laterals[level]
        assert float(x.flatten(1).norm(dim=1).max()) < 1
        with torch.no_grad():
            added = neck.projectors[level](x, mixed[level]) - x
        ratio = (added.flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)).mean()
        assert s['projection_ratio'] == pytest.approx(float(ratio), rel=1e-4)
