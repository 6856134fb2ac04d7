"""The binaries' output is their own: no library's warnings about what they
check themselves, and class names in any script in the evaluation's table
and confusion-matrix image."""

import unicodedata
import warnings

import numpy as np
import pytest
from matplotlib import font_manager
from matplotlib.ft2font import FT2Font

import cifar10_eval
from harness import fake_cifar
from harness.procs import run_binary
from helpers import TENSORFLOW_ERROR

# Pillow warns of an image above 89 million pixels as it opens it: this one,
# which the project refuses as too large in its own words.
BOMB = 9500 * 9500


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    fake_cifar.write_image_folders(str(folder), ["a", "b"], 20, varied=False)
    (folder / "a" / "huge.png").write_bytes(fake_cifar.png_of_one_colour(9500, 9500))
    return folder


def test_packing_a_huge_image_says_so_in_its_own_words(image_dir, tmp_path):
    result = run_binary(
        "cifar10_pack.py", "--image_dir=%s" % image_dir, "--data_dir=%s" % tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "Skipped 1 image(s) of more than " in result.stdout, result.stdout
    assert "Warning" not in result.stderr, result.stderr
    assert TENSORFLOW_ERROR.findall(result.stderr) == [], result.stderr


# Classifying a huge image: test_classify.py, in the classifying binary's run
# of odd and thin images.


def font_that_draws(text):
    """The file of an installed font other than matplotlib's last resort
    (which draws a placeholder for every character) that has every
    character of text, or None."""
    for entry in sorted(font_manager.fontManager.ttflist, key=lambda e: e.fname):
        if "LastResort" in entry.fname:
            continue
        font = FT2Font(entry.fname)
        if all(font.get_char_index(ord(c)) for c in text):
            return entry.fname
    return None


def confusion_image(class_names):
    """cifar10_eval.confusion_image(), which must warn of nothing."""
    matrix = np.arange(len(class_names) ** 2).reshape(len(class_names), -1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return cifar10_eval.confusion_image(matrix, class_names, 7)


def test_a_class_name_no_font_has_is_drawn_by_its_number():
    names = ["cat", "dog", "\u732b"]  # a cat in Chinese
    png, height, width = confusion_image(names)
    assert png.startswith(b"\x89PNG") and height > 0 and width > 0
    labels, font, legend = cifar10_eval.class_labels(names)
    installed = font_that_draws("\u732b")
    if installed is None:
        assert (labels, font) == (["0", "1", "2"], None)
        assert legend == (
            "0 cat, 1 dog; 2: no installed font has its name (see the text summary "
            "'Confusion matrix (counts)')"
        )
    else:
        assert (labels, legend) == (names, None)
        assert FT2Font(font.get_file()).get_char_index(0x732B)


def test_a_class_name_the_default_font_lacks_is_drawn_in_one_that_has_it():
    # A letter that matplotlib's own fonts have, but not its default one.
    letter = "\U0001d608"
    assert not FT2Font(font_manager.findfont("DejaVu Sans")).get_char_index(ord(letter))
    names = ["cat", letter]
    confusion_image(names)
    labels, font, legend = cifar10_eval.class_labels(names)
    assert (labels, legend) == (names, None)
    assert FT2Font(font.get_file()).get_char_index(ord(letter))


def test_a_dollar_in_a_class_name_starts_no_formula():
    # As a formula, "$x^$" would not parse.
    confusion_image(["cost $x^$", "dog"])


def display_width(text):
    return sum(
        0
        if unicodedata.combining(c)
        else 2
        if unicodedata.east_asian_width(c) in "WF"
        else 1
        for c in text
    )


def test_the_table_is_aligned_for_names_in_any_script():
    names = ["cat", "\u732b\u732b", "cafe\u0301", "dog"]
    matrix = np.array([[3, 1, 0, 0], [0, 2, 0, 0], [0, 0, 4, 0], [0, 0, 0, 1]])
    lines = cifar10_eval.per_class_table(matrix, names).splitlines()
    rows = lines[: 1 + len(names)]
    assert len({display_width(line) for line in rows}) == 1, rows
    # Each name padded to the widest: two of the display's columns a
    # character of 猫.
    assert rows[2].startswith("  \u732b\u732b  ")
    assert rows[1].startswith("  cat   ")
