"""The U-Net: shapes for any frame size, the two named configs, and its building blocks."""

import pytest
import torch
from torch import nn

from napari_ccdseg.classes import N_CLASSES
from napari_ccdseg.errors import InputError
from napari_ccdseg.unet import UNET_CONFIGS, UNetConfig, build_unet, count_parameters


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return build_unet("small")


@pytest.mark.parametrize("shape", [(1, 1, 64, 64), (2, 1, 37, 45), (1, 1, 1, 1), (1, 1, 3, 70)])
def test_logits_keep_the_input_size(small, shape):
    logits = small(torch.randn(shape))
    assert logits.shape == (shape[0], N_CLASSES, *shape[2:])


def test_channels_last_gives_the_same_logits(small):
    small.eval()
    x = torch.randn(2, 1, 37, 45)
    expected = small(x)
    fast = build_unet("small")
    fast.load_state_dict(small.state_dict())
    fast = fast.to(memory_format=torch.channels_last).eval()
    got = fast(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-4)  # other kernels, other rounding


@pytest.mark.parametrize(("name", "expected"), [("small", 0.48e6), ("seed", 7.76e6)])
def test_parameter_counts_match_the_issue(name, expected):
    assert count_parameters(build_unet(name)) == pytest.approx(expected, rel=0.05)


def test_elu_transposed_convolutions_and_dropout():
    model = build_unet("seed")
    kinds = [type(module) for module in model.modules()]
    assert nn.ELU in kinds
    assert kinds.count(nn.ConvTranspose2d) == len(model.config.widths) - 1
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout2d)]
    assert len(dropouts) == 2 * len(model.config.widths) - 1  # one per block, the original's layout
    assert all(d.p == pytest.approx(0.18) for d in dropouts)
    assert [type(m) for m in build_unet("small").modules()].count(nn.Dropout2d) == 1


def test_eval_is_deterministic_and_training_is_stochastic(small):
    x = torch.randn(1, 1, 32, 32)
    small.eval()
    torch.testing.assert_close(small(x), small(x), rtol=0, atol=0)
    small.train()
    assert not torch.equal(small(x), small(x))
    small.eval()


def test_gradients_reach_the_first_layer():
    model = build_unet(UNetConfig(widths=(4, 8)))
    model(torch.randn(1, 1, 17, 19)).sum().backward()
    assert model.down[0].conv1.weight.grad.abs().sum() > 0


def test_config_round_trips_through_a_dict():
    config = UNetConfig(widths=(8, 16, 32), dropout=0.1, dropout_mode="bottleneck")
    assert UNetConfig.from_dict(config.to_dict()) == config
    assert config.factor == 4
    with pytest.raises(TypeError, match="unknown"):
        UNetConfig.from_dict({**config.to_dict(), "kernel": 5})
    with pytest.raises(ValueError):
        UNetConfig(dropout_mode="everywhere")


def test_named_configs_are_not_shared():
    build_unet("small").config.dropout = 0.5
    assert UNET_CONFIGS["small"].dropout == pytest.approx(0.18)


def test_unknown_config_name_lists_the_names():
    with pytest.raises(InputError, match="small, seed"):
        build_unet("huge")
