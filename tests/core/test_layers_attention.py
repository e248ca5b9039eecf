"""The attention block library: numbers against hand computations, identities at initialisation, 2D and 3D."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from edgeseg.layers.attention import GroupedAttentionGate
from edgeseg.layers.gates import SKIP_ATTENTION_CHOICES, AttentionGate, skip_attention
from edgeseg.layers.inverted_residual import InvertedResidual
from edgeseg.layers.pla import ProgressiveLuongAttention, attention_regularizer
from edgeseg.layers.recalibration import (
    CBAM,
    ECA,
    CoordinateAttention,
    SqueezeExcitation,
    eca_kernel_size,
)
from edgeseg.layers.self_attention import NonLocalBlock, dot_product_attention


def _x(dims: int, c: int = 8, side: int = 8, n: int = 2) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(n, c, *([side] * dims))


def test_dot_product_attention_matches_torch():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 5, 4), torch.randn(2, 7, 4), torch.randn(2, 7, 3)
    out, w = dot_product_attention(q, k, v)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v))
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 5))


@pytest.mark.parametrize("dims", [2, 3])
def test_squeeze_excitation_is_the_textbook_formula(dims):
    x = _x(dims, c=32)
    se = SqueezeExcitation(32, 16, dims).eval()
    pooled = x.mean(dim=tuple(range(2, x.dim())), keepdim=True)
    w = torch.sigmoid(se.fc2(torch.relu(se.fc1(pooled))))
    torch.testing.assert_close(se(x), x * w)
    assert se.fc1.out_channels == 2


def test_eca_kernel_follows_the_channel_count():
    # int((log2 C + 1) / 2), made odd: 16 -> 3, 64 -> 3, 256 -> 5, 512 -> 5, 1024 -> 5
    assert [eca_kernel_size(c) for c in (16, 64, 256, 512, 1024)] == [3, 3, 5, 5, 5]
    with pytest.raises(ValueError, match="odd"):
        ECA(16, kernel_size=4)


@pytest.mark.parametrize("dims", [2, 3])
def test_eca_is_a_1d_conv_across_pooled_channels(dims):
    x = _x(dims, c=16)
    eca = ECA(16, dims=dims).eval()
    pooled = x.mean(dim=tuple(range(2, x.dim())))  # (N, C)
    w = torch.sigmoid(F.conv1d(pooled[:, None], eca.conv.weight, padding=1))[:, 0]
    torch.testing.assert_close(eca(x), x * w.reshape(*w.shape, *([1] * dims)))


@pytest.mark.parametrize("dims", [2, 3])
def test_coordinate_attention_is_equivariant_along_each_axis(dims):
    # Each axis' weights depend only on that axis' position: permuting positions along an axis permutes the
    # output the same way (plain channel attention would also pass; a spatial conv would not).
    x = _x(dims, c=16)
    ca = CoordinateAttention(16, dims=dims).eval()
    with torch.no_grad():
        for conv in ca.axis_convs:
            conv.weight.normal_()
        out = ca(x)
        for axis in range(2, 2 + dims):
            perm = torch.randperm(x.shape[axis])
            torch.testing.assert_close(ca(x.index_select(axis, perm)), out.index_select(axis, perm))
        # and the weights do vary along every axis
        w = out / x
        for axis in range(2, 2 + dims):
            assert w.std(dim=axis).mean() > 1e-3
    assert ca.mix[0].out_channels == 8  # max(16 // 32, 8)


def test_cbam_is_channel_then_spatial_attention():
    x = _x(2, c=32)
    cbam = CBAM(32).eval()
    y = cbam.ca(x) * x
    torch.testing.assert_close(cbam(x), cbam.sa(y) * y)


@pytest.mark.parametrize("dims", [2, 3])
def test_non_local_block_starts_as_identity_and_matches_dense_attention(dims):
    x = _x(dims, c=8)
    nl = NonLocalBlock(8, kv_pool=2, dims=dims).eval()
    torch.testing.assert_close(nl(x), x)  # BN scale starts at zero
    with torch.no_grad():
        nl.W[1].weight.fill_(1.0)
        k = F.max_pool2d(nl.phi(x), 2) if dims == 2 else F.max_pool3d(nl.phi(x), 2)
        v = F.max_pool2d(nl.g(x), 2) if dims == 2 else F.max_pool3d(nl.g(x), 2)
        q = nl.theta(x).flatten(2).transpose(1, 2)
        a = torch.softmax(q @ k.flatten(2) / math.sqrt(4), dim=-1)
        y = (a @ v.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(2, 4, *x.shape[2:])
        torch.testing.assert_close(nl(x), x + nl.W(y))


def test_attention_gate_equals_the_grouped_gate_with_kernel_1():
    # Oktay's gate (1x1 convs + BN) is GAG with kernel 1 and no groups: same function, same weights.
    torch.manual_seed(0)
    ag = AttentionGate(16, 16, 8).eval()
    gag = GroupedAttentionGate(16, 16, 8, kernel_size=1).eval()
    gag.load_state_dict(ag.state_dict())
    g, x = torch.randn(2, 16, 8, 8), torch.randn(2, 16, 8, 8)
    torch.testing.assert_close(ag(g, x), gag(g, x))


@pytest.mark.parametrize("dims", [2, 3])
def test_residual_gate_starts_as_identity_and_resamples(dims):
    torch.manual_seed(0)
    g, x = torch.randn(1, 8, *([4] * dims)), torch.randn(1, 4, *([8] * dims))
    gate = AttentionGate(8, 4, 2, skip_stride=2, residual=True, psi_bias=2.0, norm=False, dims=dims)
    torch.testing.assert_close(gate(g, x), x)  # gamma = 0
    with torch.no_grad():
        gate.psi[0].weight.zero_()
    mask = gate.mask(g, x)
    assert mask.shape == (1, 1, *x.shape[2:])
    torch.testing.assert_close(mask, torch.full_like(mask, 1 / (1 + math.exp(-2.0))))
    # v1 style: the coarse gate is upsampled to the skip
    up = AttentionGate(8, 4, 2, norm=False, dims=dims)
    assert up(g, x).shape == x.shape


def test_attention_regularizer_is_the_variance_of_each_map():
    eye = torch.eye(2)[None]  # values 1, 0, 0, 1: mean 0.5, variance 0.25
    uniform = torch.full((3, 4, 5), 0.2)
    torch.testing.assert_close(attention_regularizer([eye]), torch.tensor(0.25))
    torch.testing.assert_close(attention_regularizer([eye, uniform]), torch.tensor(0.125))
    with pytest.raises(ValueError, match="at least one"):
        attention_regularizer([])


@pytest.mark.parametrize("dims", [2, 3])
def test_pla_weights_are_softmax_over_pooled_keys(dims):
    torch.manual_seed(0)
    g, x = torch.randn(2, 16, *([4] * dims)), torch.randn(2, 8, *([8] * dims))
    pla = ProgressiveLuongAttention(16, 8, key_dim=4, scale=2, kv_pool=2, dims=dims).eval()
    out, w = pla(g, x)
    assert out.shape == x.shape
    assert w.shape == (2, 8**dims, 4**dims)  # every skip position attends to the pooled 4^d grid
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 8**dims))
    loss = out.square().mean() + attention_regularizer([w])
    loss.backward()
    assert pla.query.weight.grad.abs().sum() > 0 and pla.ir.project[0].weight.grad.abs().sum() > 0


def test_inverted_residual_counts_and_residual():
    # MobileNetV2 block 16 -> 16, expansion 6: 16*96 + 9*96 + 96*16 weights + 3 BNs (2*(96+96+16))
    block = InvertedResidual(16, 16, 6)
    assert sum(p.numel() for p in block.parameters()) == 16 * 96 + 9 * 96 + 96 * 16 + 2 * (96 + 96 + 16)
    assert block.identity
    x = torch.randn(1, 16, 8, 8)
    assert InvertedResidual(16, 24, 6, stride=2)(x).shape == (1, 24, 4, 4)
    assert InvertedResidual(16, 24, 2, project_shortcut=True).shortcut is not None
    with pytest.raises(ValueError, match="stride"):
        InvertedResidual(16, 16, stride=3)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("kind", list(SKIP_ATTENTION_CHOICES))
def test_every_skip_attention_choice_keeps_the_skip_shape(kind, dims):
    torch.manual_seed(0)
    block = skip_attention(kind, 8, dims, kv_pool=2).eval()
    g, x = torch.randn(1, 8, *([8] * dims)), torch.randn(1, 8, *([8] * dims))
    with torch.no_grad():
        out = block(g, x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    if kind == "none":
        assert out is x


def test_unknown_skip_attention_lists_the_choices():
    with pytest.raises(ValueError, match="choose one of none, gag, ag, se"):
        skip_attention("sk-net", 8)
