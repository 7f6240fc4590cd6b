"""The lead's spec parser: trtexec syntax, awkward names, and every way a shape can be wrong."""

from __future__ import annotations

import pytest

from trtkit.errors import ProfileError, ShapeError, SpecError
from trtkit.spec import (
    ShapeProfile,
    TensorSpec,
    format_shapes,
    parse_axes,
    parse_shapes,
    validate_shapes,
)

SPECS = (TensorSpec("images", "float32", ("batch", 3, 640, 640)), TensorSpec("im_info", "float32", ("batch", 2)))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("input.1:1x3x640x640", {"input.1": (1, 3, 640, 640)}),
        ("backbone/conv1/x:1x3", {"backbone/conv1/x": (1, 3)}),
        ("input:0:2x3x128x128", {"input:0": (2, 3, 128, 128)}),
        ("'a,b':1x3,c:4", {"a,b": (1, 3), "c": (4,)}),
        ('"x:0":1X2', {"x:0": (1, 2)}),
        ("x:1x3, y:2", {"x": (1, 3), "y": (2,)}),
    ],
)
def test_parse_shapes_names(text, expected):
    assert parse_shapes(text) == expected


def test_format_round_trip():
    shapes = {"a,b": (1, 3), "in:0": (2, 4), "x.y/z": (5,)}
    assert parse_shapes(format_shapes(shapes)) == shapes


@pytest.mark.parametrize(
    "text, needle",
    [
        ("", "empty"),
        ("1x3x224x224", "gives dims '1x3x224x224' without an input name"),
        ("=1x3", "no input name"),
        ("x:1x3,,y:2", "empty item"),
        ("x:1xax3", "not a list of non-negative integers"),
        ("x:-1x3", "not a list of non-negative integers"),
        ("'x:1x3", "unclosed"),
        ("x:1,x:2", "twice"),
        ("x:0x3x224x224", "dims must be >= 1"),
        ("x:1x3,y:1x0", "dims must be >= 1"),
    ],
)
def test_parse_shapes_malformed(text, needle):
    with pytest.raises(SpecError, match=needle):
        parse_shapes(text)


@pytest.mark.parametrize(
    "text, needles",
    [
        # '=' instead of ':' is named as such, with the corrected spec
        ("images=4x3x64x64", ["puts '=' between the input name and its dims", "images:4x3x64x64"]),
        # commas between dims: the spec is named and rewritten with 'x', not "item '3' has no input name"
        ("images:4,3,64,64", ["separates the dims of 'images' with commas", "images:4x3x64x64"]),
        ("a:1x2,images:4,3,64,64", ["dims of 'images'", "images:4x3x64x64"]),
    ],
)
def test_parse_shapes_names_the_real_mistake(text, needles):
    with pytest.raises(SpecError) as info:
        parse_shapes(text)
    for needle in needles:
        assert needle in str(info.value)
    assert "item '3'" not in str(info.value)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("images:[4,3,64,64]", {"images": (4, 3, 64, 64)}),
        ("images:[4, 3, 64, 64],im_info:[4,2]", {"images": (4, 3, 64, 64), "im_info": (4, 2)}),
        ("input:0:[1,3]", {"input:0": (1, 3)}),
    ],
)
def test_parse_shapes_reads_polygraphys_bracket_dims(text, expected):
    assert parse_shapes(text) == expected


def test_parse_shapes_bracket_dims_still_need_integers():
    with pytest.raises(SpecError, match="not a list of non-negative integers"):
        parse_shapes("images:[4,3,h,w]")


def test_inferred_dim_names_are_shown_as_unknown():
    """ONNX shape inference's ``unk__N`` names are internal: shown as -1 like any unnamed dynamic dim."""
    spec = TensorSpec("score", "float32", ("batch", "unk__146", 1))
    assert spec.display_shape() == "[batch,-1,1]"
    assert TensorSpec("x", "float32", ("unknown", 3)).display_shape() == "[unknown,3]"


def test_parse_axes():
    assert parse_axes("images:0,2,3") == ("images", (0, 2, 3))
    assert parse_axes("in:0:1") == ("in:0", (1,))
    with pytest.raises(SpecError, match="comma-separated integers"):
        parse_axes("images:a,b")
    with pytest.raises(SpecError, match="repeats"):
        parse_axes("images:0,0")


def test_unknown_name_suggests_closest():
    with pytest.raises(ShapeError) as err:
        validate_shapes(SPECS, {"image": (1, 3, 640, 640)})
    assert "'images'" in str(err.value) and "Did you mean 'images'?" in str(err.value)


def test_rank_mismatch():
    with pytest.raises(ShapeError, match="rank 3"):
        validate_shapes(SPECS, {"images": (1, 3, 640)})


def test_static_dim_conflict():
    with pytest.raises(ShapeError, match="axis 1 .* is static 3"):
        validate_shapes(SPECS, {"images": (1, 4, 640, 640)})


def test_valid_shapes_pass():
    validate_shapes(SPECS, {"images": (8, 3, 640, 640), "im_info": (8, 2)})


def test_profile_min_greater_than_opt():
    with pytest.raises(ProfileError, match="min <= opt <= max"):
        ShapeProfile.from_shapes(min={"x": (4, 3)}, opt={"x": (2, 3)}, max={"x": (8, 3)})


def test_profile_opt_greater_than_max():
    with pytest.raises(ProfileError, match="opt 9"):
        ShapeProfile.from_shapes(min={"x": (1, 3)}, opt={"x": (9, 3)}, max={"x": (8, 3)})


def test_profile_missing_flag():
    with pytest.raises(ProfileError, match="--maxShapes"):
        ShapeProfile.from_shapes(min={"x": (1, 3)}, opt={"x": (1, 3)})


def test_profile_validate_uncovered_dynamic_input():
    profile = ShapeProfile.fixed({"images": (1, 3, 640, 640)})
    with pytest.raises(ProfileError, match="im_info"):
        profile.validate(SPECS)
