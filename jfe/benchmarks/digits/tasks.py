"""The digits benchmark's catalogue: its five tasks, their vocabulary, writer splits and caps."""

from __future__ import annotations

from dataclasses import dataclass

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
COLOURS = ("red", "green", "blue", "yellow", "purple")
# The collapse-prone variant's it2t colours, one per digit: in its train split digit d is usually
# coloured SHORTCUT_COLOURS[d], so the colour word alone names the caption; val and test draw
# colours uniformly, so there only the image tells the digit.
SHORTCUT_COLOURS = (*COLOURS, "orange", "black", "white", "pink", "brown")
DEFAULT_SHORTCUT = 0.9
TRANSFORMS = ("rotated", "mirrored", "inverted")
# "plain" is the untransformed image; it is in the composed-retrieval pool but never asked for.
VARIANTS = ("plain", *TRANSFORMS)

SPLITS = ("train", "val", "test")
N_WRITERS = 43
SPLIT_WRITERS: dict[str, range] = {"train": range(0, 33), "val": range(33, 38), "test": range(38, 43)}
# Eval splits stay small enough to embed on a CPU; train is capped only to bound the file sizes.
MAX_QUERIES: dict[str, int] = {"train": 4500, "val": 200, "test": 200}
N_HARD_NEGATIVES = 5

T2I_TEMPLATES = ("a handwritten {digit}", "the digit {digit}", "the handwritten digit {digit}")
I2T_TEMPLATE = "a handwritten {digit}"
IT2T_TEMPLATE = "a {colour} {digit}"


@dataclass(frozen=True)
class DigitsTask:
    name: str
    dataset_id: int
    task_id: int
    query_modality: str
    cand_modality: str
    prompts: tuple[str, str, str, str]
    description: str


# Dataset ids 20-24 stay clear of the ids the published M-BEIR datasets use, so this benchmark can
# be mixed with M-BEIR itself without qid/did collisions.
TASKS: tuple[DigitsTask, ...] = (
    DigitsTask(
        "digits_t2i",
        20,
        0,
        "text",
        "image",
        (
            "Retrieve an image of the handwritten digit described.",
            "Find a handwritten image of the digit named in the text.",
            "Show the handwritten digit that the text describes.",
            "Retrieve a handwriting of the described digit.",
        ),
        "text naming a digit -> every handwritten image of that digit",
    ),
    DigitsTask(
        "digits_i2t",
        21,
        3,
        "image",
        "text",
        (
            "Retrieve the name of the digit shown.",
            "Find the text that names the handwritten digit in the image.",
            "Which digit is written in this image?",
            "Retrieve the caption of the handwritten digit.",
        ),
        "image of a digit -> the text naming it (one text per digit)",
    ),
    DigitsTask(
        "digits_i2i",
        22,
        4,
        "image",
        "image",
        (
            "Find another handwriting of the same digit.",
            "Retrieve the same digit written by another writer.",
            "Find a handwritten image of the digit shown.",
            "Retrieve another image of this handwritten digit.",
        ),
        "image of a digit -> images of the same digit by other writers",
    ),
    DigitsTask(
        "digits_it2t",
        23,
        6,
        "image,text",
        "text",
        (
            "Find the caption that matches the image and the colour.",
            "Retrieve the text naming the digit shown in the given colour.",
            "Combine the handwritten digit and the colour into one caption.",
            "Find the caption of the digit in the image, coloured as the text says.",
        ),
        "image of a digit + a colour word -> the text naming both (10 digits x 5 colours)",
    ),
    DigitsTask(
        "digits_it2i",
        24,
        7,
        "image,text",
        "image",
        (
            "Find the handwritten digit after the described transformation.",
            "Retrieve the image of this digit changed as the text says.",
            "Apply the described transformation to the handwritten digit.",
            "Find the same digit, rotated, mirrored or inverted as described.",
        ),
        "image of a digit + rotated/mirrored/inverted -> that digit so transformed, by other writers",
    ),
)
DIGITS_TASKS: list[str] = [task.name for task in TASKS]
