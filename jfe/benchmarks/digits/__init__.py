"""A small multimodal retrieval benchmark in M-BEIR layout, built offline from scikit-learn's digits.

scikit-learn's ``load_digits`` holds 1797 handwritten digits (8x8 pixels, 16 grey levels). From
them :func:`build_digits_mbeir` writes five retrieval tasks, each its own M-BEIR dataset:

==============  =======  ==============  ==========  ==================================================
dataset         task_id  query           candidate   relevance
==============  =======  ==============  ==========  ==================================================
digits_t2i      0        text            image       "a handwritten seven" -> every image of a seven
digits_i2t      3        image           text        image of a seven -> "a handwritten seven"
digits_i2i      4        image           image       image of a seven -> sevens by other writers
digits_it2t     6        image,text      text        image of a seven + "red" -> "a red seven"
digits_it2i     7        image,text      image       image of a seven + "rotated" -> rotated sevens
==============  =======  ==============  ==========  ==================================================

The data carries no writer ids. The UCI original is stored writer by writer, so the samples, in
their original order, are cut into 43 contiguous blocks that stand in for its 43 writers. Writers
0-32 make the train split, 33-37 val and 38-42 test, so no writer of val or test is seen in
training. In tasks whose queries and candidates are both images, a query only meets candidates
by the other half of the split's writers, never itself or its own writer's hand: val and test
take their queries from the first half and their pool from the second; train asks both ways.

Images are white ink on black, upscaled to 16x16 RGB by pixel repetition; a grey level ``v`` in
0..16 becomes ``v * 255 // 16``. The transforms of ``digits_it2i`` act on the 0..16 grid before
rendering: ``rotated`` turns it by 180 degrees, ``mirrored`` flips it left to right and
``inverted`` replaces ``v`` by ``16 - v`` (black ink on white).

Everything is a function of ``seed``: the same seed gives byte-identical files.

The modules: :mod:`~.tasks` is the catalogue (tasks, vocabulary, writer splits), :mod:`~.source`
the pixels, :mod:`~.context` what the builders share, :mod:`~.builders` one builder per task and
:mod:`~.write` the files.
"""

from jfe.benchmarks.digits.source import DigitsSource, render_digit, transform_digit
from jfe.benchmarks.digits.tasks import (
    DEFAULT_SHORTCUT,
    DIGITS_TASKS,
    SPLIT_WRITERS,
    TASKS,
    TRANSFORMS,
    VARIANTS,
    DigitsTask,
)
from jfe.benchmarks.digits.write import FORMAT_VERSION, build_digits_mbeir, ensure_digits_mbeir

__all__ = [
    "DEFAULT_SHORTCUT",
    "DIGITS_TASKS",
    "FORMAT_VERSION",
    "SPLIT_WRITERS",
    "TASKS",
    "TRANSFORMS",
    "VARIANTS",
    "DigitsSource",
    "DigitsTask",
    "build_digits_mbeir",
    "ensure_digits_mbeir",
    "render_digit",
    "transform_digit",
]
