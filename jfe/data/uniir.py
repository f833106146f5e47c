"""What UniIR's own code (TIGER-AI-Lab/UniIR) fixes about M-BEIR, written once for jfe to match.

- ``DATASET_IDS`` (``src/data/preprocessing/utils.py``): the id prefix of every qid and did.
- ``format_string`` (same file): UniIR runs it on every candidate text, on the prompt, and then on
  the joined ``f"{prompt} {query_txt}"``, so a query text after a prompt is not capitalised and the
  final period lands at the end of the query text (``src/data/mbeir_dataset.py``).
"""

from __future__ import annotations

DATASET_IDS: dict[str, int] = {
    "VisualNews": 0,
    "Fashion200K": 1,
    "WebQA": 2,
    "EDIS": 3,
    "NIGHTS": 4,
    "OVEN": 5,
    "INFOSEEK": 6,
    "FashionIQ": 7,
    "CIRR": 8,
    "MSCOCO": 9,
}
DATASET_NAMES: dict[str, str] = {str(i): name for name, i in DATASET_IDS.items()}


def dataset_name(dataset_id: str, names: dict[str, str] | None = None) -> str:
    """The dataset an id prefix stands for: ``names`` (e.g. from an instruction TSV) first, then
    UniIR's ``DATASET_IDS``, else the prefix itself."""
    if names and dataset_id in names:
        return names[dataset_id]
    return DATASET_NAMES.get(dataset_id, dataset_id)


def format_string(text: str | None) -> str:
    """UniIR's normalisation: drop ``\\r``, strip spaces, then surrounding double quotes, capitalise
    the first character and end with a period unless it ends in ``.``, ``?`` or ``!``."""
    text = (text or "").replace("\r", "").strip().strip('"')
    if text:
        text = text[0].upper() + text[1:]
        if text[-1] not in ".?!":
            text += "."
    return text


def format_query(prompt: str | None, text: str | None) -> tuple[str | None, str | None]:
    """(instruction, text) such that ``f"{instruction} {text}"`` is what UniIR embeds for a query
    with ``prompt`` (or none) and ``text`` (or none): ``format_string(f"{format_string(prompt)} {text}")``.

    jfe's chat template joins instruction and text with one space, so splitting UniIR's string
    after the formatted prompt gives the same rendered sequence."""
    if not prompt:
        return None, format_string(text) or None
    head = format_string(prompt)
    # the formatted prompt starts with a capital and ends in . ? or !, so formatting the joined
    # string leaves it as it is and only touches the text after it
    whole = format_string(f"{head} {text or ''}")
    return head, whole[len(head) :].strip() or None
