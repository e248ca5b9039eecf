"""UltraLightUNet 2D: layout facts from the authors' release, input checks, weight loading."""

from __future__ import annotations

import pytest
import torch

from edgeseg.layers.mkconv import channel_shuffle
from edgeseg.models import create_model


def test_state_dict_uses_the_release_key_names_and_shapes():
    sd = create_model("ultralightunet-t").state_dict()
    # (key, shape) facts of MK-UNet-T (channels [4, 8, 16, 24, 32], expansion 2, kernels [1, 3, 5]).
    facts = {
        "encoder1.0.pconv1.0.weight": (6, 3, 1, 1),
        "encoder1.0.multi_scale_dwconv.dwconvs.2.0.weight": (6, 1, 5, 5),
        "encoder1.0.pconv2.0.weight": (4, 6, 1, 1),
        "encoder1.0.conv1x1.weight": (4, 3, 1, 1),
        "decoder5.0.pconv1.0.weight": (8, 4, 1, 1),
        "AG1.W_g.0.weight": (12, 2, 3, 3),
        "AG4.psi.1.running_mean": (1,),
        "CA1.fc1.weight": (2, 32, 1, 1),
        "CA5.fc1.weight": (1, 4, 1, 1),
        "SA.conv.weight": (1, 2, 7, 7),
        "out1.weight": (1, 16, 1, 1),
        "out4.bias": (1,),
    }
    for key, shape in facts.items():
        assert tuple(sd[key].shape) == shape, key
    assert "decoder5.0.conv1x1.weight" not in sd  # same in/out channels: identity shortcut


def test_channel_shuffle_interleaves_groups():
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]
    assert channel_shuffle(x, 1) is x


def test_grayscale_input_is_repeated_to_rgb():
    torch.manual_seed(0)
    rgb = create_model("ultralightunet-t").eval()
    gray = create_model("ultralightunet-t", in_channels=1).eval()
    gray.load_state_dict(rgb.state_dict())
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(gray(x), rgb(x.repeat(1, 3, 1, 1)))


def test_bad_input_sizes_say_how_to_fix():
    model = create_model("ultralightunet-t").eval()
    with pytest.raises(ValueError, match="resize or pad it to 224x256"):
        model(torch.randn(1, 3, 200, 256))
    with pytest.raises(ValueError, match="expected 3 input channels"):
        model(torch.randn(1, 4, 64, 64))


def test_aux_heads_are_optional_and_used_only_by_forward_aux():
    torch.manual_seed(0)
    full = create_model("ultralightunet-t").eval()
    lean = create_model("ultralightunet-t", aux_heads=False).eval()
    missing = set(full.state_dict()) - set(lean.state_dict())
    assert missing == {f"out{i}.{p}" for i in (1, 2, 3) for p in ("weight", "bias")}
    lean.load_state_dict({k: v for k, v in full.state_dict().items() if k in lean.state_dict()})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(full(x), lean(x))
        outs = full.forward_aux(x)
    assert [o.shape for o in outs] == [torch.Size([1, 1, 64, 64])] * 4
    torch.testing.assert_close(outs[0], full(x))


def test_weights_round_trip_and_wrong_model_is_refused(tmp_path):
    src = create_model("ultralightunet-t")
    path = tmp_path / "w.pt"
    torch.save({"format": "edgeseg-checkpoint/1", "model": "ultralightunet-t",
                "state_dict": src.state_dict()}, path)
    loaded = create_model("ultralightunet-t", weights=path)
    for k, v in src.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    with pytest.raises(ValueError, match="checkpoint is for model 'ultralightunet-t', not 'ultralightunet-s'"):
        create_model("ultralightunet-s", weights=path)
    bare = tmp_path / "bare.pt"
    torch.save(src.state_dict(), bare)  # a bare state_dict, as the authors release
    create_model("ultralightunet-t", weights=bare)
    with pytest.raises(ValueError, match="do not fit"):
        create_model("ultralightunet-s", weights=bare)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable torch checkpoint"):
        create_model("ultralightunet-t", weights=junk)
    with pytest.raises(FileNotFoundError):
        create_model("ultralightunet-t", weights=tmp_path / "nope.pt")
