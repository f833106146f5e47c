"""MIRe's response-to-passage data: VQA records (image, question, short answer) become pairs whose
positive is a passage a generator (a local image-text-to-text checkpoint, greedy, shown the image
by default as MIRe's is) writes from the question and answer: a retrieval target, as a KB document
is, where a short answer is not. Output: the pair format (:mod:`jfe.data.pairs`), a line per usable
record in input order, with extra keys ``id``, ``question`` and ``answer`` (the reader ignores them)::

    {"query": {"text": QUESTION, "image": PATH}, "pos": [{"text": PASSAGE}], "instruction": ...,
     "id": SOURCE_ID, "question": QUESTION, "answer": ANSWER}

Resume: the output grows as ``OUT.partial``; once a chunk of ``chunk_size`` records is appended and
fsynced, ``OUT.progress.json`` (replaced atomically) records that file's length, the records done and
the settings. A rerun cuts the partial file back to that length, refuses other settings and goes on
from the next record; the last chunk in, the file is renamed to OUT. Chunks and batches start at
fixed records and decoding is greedy: a resumed build writes the bytes an uninterrupted one does.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from jfe.atomic import atomic_write_text
from jfe.data.jsonl import DataFormatError, json_lines
from jfe.embedder import attention_implementation, default_device, default_dtype
from jfe.inputs import BadInputError, load_image
from jfe.pixels import set_pixel_budget

logger = logging.getLogger(__name__)

DEFAULT_PROMPT = (
    "Write a short encyclopedic passage, like a paragraph of a Wikipedia article, that answers the "
    "question below. State the answer and the facts that support it, without referring to the image.\n"
    "Question: {question}\nAnswer: {answer}"
)
DEFAULT_INSTRUCTION = "Retrieve a passage that answers the question about the image."


class BadRecordError(DataFormatError):
    """An input record that cannot become a pair; the message names ``file:line`` and its id."""


@dataclass(frozen=True)
class PassageOptions:
    """How records become pairs; all of it but ``skip_bad`` must match for a build to resume."""

    id_field: str = "id"  # a string or an integer (VQAv2's question_id)
    image_field: str = "image"  # a path relative to images_root
    question_field: str = "question"
    answer_field: str = "answer"  # a string, used when present; else:
    answers_field: str = "answers"  # VQAv2's list of strings or {"answer": ...}: the most common one
    images_root: str | None = None  # None: the input file's folder
    prompt: str = DEFAULT_PROMPT  # formatted with {question} and {answer}; {{ and }} for braces
    instruction: str | None = DEFAULT_INSTRUCTION  # the query instruction of every pair (None: none)
    task: str | None = None  # every pair's task (None: the pair reader's default, the file's name)
    with_image: bool = True  # the generator sees the image as well as the question and answer
    batch_size: int = 8
    chunk_size: int = 256  # records per commit: the most an interrupted build loses
    max_new_tokens: int = 256
    skip_bad: bool = False  # leave bad records out and count them, instead of failing

    def __post_init__(self) -> None:  # a bad option fails before any model is loaded
        if min(self.batch_size, self.chunk_size, self.max_new_tokens) < 1:
            raise ValueError("batch_size, chunk_size and max_new_tokens must be at least 1")
        try:
            filled = self.prompt.format(question="\0q", answer="\0a")
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(f"prompt: only {{question}} and {{answer}} go in braces ({{{{ for one): {err!r}") from None
        if "\0q" not in filled or "\0a" not in filled:
            raise ValueError("prompt: needs both placeholders, {question} and {answer}")


@dataclass(frozen=True)
class Report:
    rows: int  # pairs in the file
    skipped: int  # bad records left out (skip_bad)
    resumed_at: int  # input records an earlier run had done (0: built from the start)


@dataclass(frozen=True)
class _Record:
    where: str  # "file:line (id ...)", for messages
    id: str | int
    image: Path
    question: str
    answer: str


def most_common_answer(answers: Any) -> str:
    """The most common of VQAv2-style ``answers``; a tie goes to the one listed first."""
    texts = [a.get("answer") if isinstance(a, dict) else a for a in answers] if isinstance(answers, list) else []
    if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        raise ValueError('should be a non-empty list of strings or {"answer": string} objects')
    return Counter(t.strip() for t in texts).most_common(1)[0][0]  # ties stay in first-seen order


def _string(obj: dict, key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        problem = f"should be a non-empty string, got {json.dumps(value)[:40]}" if key in obj else "is missing"
        raise BadRecordError(f"{where}: '{key}' {problem}")
    return value.strip()


def _record(obj: Any, where: str, o: PassageOptions, root: Path) -> _Record:
    if not isinstance(obj, dict):
        raise BadRecordError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    rid = obj.get(o.id_field)
    if not isinstance(rid, (str, int)) or isinstance(rid, bool):  # VQAv2's question_id is an integer
        problem = f"should be a string or an integer, got {json.dumps(rid)[:40]}" if o.id_field in obj else "is missing"
        raise BadRecordError(f"{where}: '{o.id_field}' {problem}")
    where = f"{where} (id {json.dumps(rid)})"
    if o.answer_field in obj or o.answers_field not in obj:
        answer = _string(obj, o.answer_field, where)
    else:
        try:
            answer = most_common_answer(obj[o.answers_field])
        except ValueError as err:
            raise BadRecordError(f"{where}: '{o.answers_field}' {err}") from None
    image = root / _string(obj, o.image_field, where)
    return _Record(where, rid, image, _string(obj, o.question_field, where), answer)


class Generator:
    """A local image-text-to-text checkpoint answering batches of prompts greedily (a Qwen2-VL-Instruct
    folder, say); a resumed build must share its ``settings``."""

    def __init__(self, model: Any, processor: Any, settings: dict[str, Any]):
        self.model, self.processor, self.settings = model, processor, settings

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        dtype: str = "auto",
        device: str | None = None,
        trust_remote_code: bool = False,
        max_pixels: int | None = None,
    ) -> Generator:
        """``path``'s ``AutoModelForImageTextToText`` and ``AutoProcessor``; ``dtype="auto"``: bfloat16 on
        CUDA, else float32; ``device``: CUDA when present; ``max_pixels`` bounds each image's pixels."""
        where = torch.device(device) if device else default_device()
        kind = default_dtype(where) if dtype == "auto" else getattr(torch, dtype)
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
        if max_pixels:
            set_pixel_budget(processor, max_pixels=max_pixels)
        processor.tokenizer.padding_side = "left"  # every row of a batch then continues from the last column
        attention = attention_implementation(where, kind)
        model = AutoModelForImageTextToText.from_pretrained(
            path, dtype=kind, attn_implementation=attention, trust_remote_code=trust_remote_code
        )
        settings = {"generator": str(Path(path).resolve()), "dtype": str(kind), "device": where.type}
        return cls(model.to(where).eval(), processor, {**settings, "max_pixels": max_pixels})

    def generate(self, prompts: list[str], images: list[Image.Image] | None, max_new_tokens: int) -> list[str]:
        """One reply per prompt (``images[i]`` shown before prompt ``i`` when given), stripped."""
        image_part = [{"type": "image"}] if images else []
        chats = [[{"role": "user", "content": [*image_part, {"type": "text", "text": p}]}] for p in prompts]
        texts = [self.processor.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in chats]
        inputs = self.processor(text=texts, images=images or None, padding=True, return_tensors="pt")
        inputs = inputs.to(self.model.device)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
        replies = self.processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        return [r.strip() for r in replies]


class _Progress:
    """``OUT.partial`` (the chunks so far) and ``OUT.progress.json`` (their length, counts, settings)."""

    def __init__(self, out: Path, settings: dict[str, Any]):
        self.settings = json.loads(json.dumps(settings))  # scalars, as the progress file reads them back
        self.partial, self.path = out.with_name(out.name + ".partial"), out.with_name(out.name + ".progress.json")
        self.state = {"records": 0, "bytes": 0, "rows": 0, "skipped": 0}

    def open(self, overwrite: bool) -> int:
        """Records done: 0 on a fresh start, else the progress file's (the partial file cut back to them)."""
        if overwrite or not self.path.is_file():  # a partial file without a progress file holds no chunk
            self.partial.parent.mkdir(parents=True, exist_ok=True)
            self.partial.write_bytes(b"")
            self._save()
            return 0
        saved = json.loads(self.path.read_text())
        changed = ", ".join(sorted({k for k, _ in set(self.settings.items()) ^ set(saved["settings"].items())}))
        if changed:
            raise ValueError(f"{self.path}: unfinished, with other settings ({changed}): --overwrite starts over")
        self.state = saved["state"]
        if not self.partial.is_file() or self.partial.stat().st_size < self.state["bytes"]:
            raise ValueError(f"{self.partial} is shorter than {self.path} says: --overwrite starts over")
        os.truncate(self.partial, self.state["bytes"])
        return self.state["records"]

    def commit(self, lines: list[str], skipped: int, records: int) -> None:
        data = "".join(lines).encode("utf-8")
        with open(self.partial, "ab") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())  # on disk before the progress file says so
        for key, more in (("records", records), ("bytes", len(data)), ("rows", len(lines)), ("skipped", skipped)):
            self.state[key] += more
        self._save()

    def _save(self) -> None:
        atomic_write_text(self.path, json.dumps({"settings": self.settings, "state": self.state}, indent=1))


def _chunk_lines(
    chunk: list[tuple[int, Any]], source: Path, folder: Path, generator: Generator, o: PassageOptions
) -> tuple[list[str], int]:
    """The pair lines of one chunk of (line number, record), in order, and how many were bad. Image
    paths are written relative to ``folder``, the output's, where the pair reader looks by default."""
    root = Path(o.images_root) if o.images_root else source.parent
    lines: list[str] = []
    batch: list[tuple[_Record, Image.Image]] = []
    skipped: list[str] = []

    def bad(err: ValueError) -> None:
        if not o.skip_bad:
            raise BadRecordError(str(err)) from None
        logger.warning("skipped %s", err)
        skipped.append(str(err))

    def run_batch() -> None:
        prompts = [o.prompt.format(question=r.question, answer=r.answer) for r, _ in batch]
        replies = generator.generate(prompts, [i for _, i in batch] if o.with_image else None, o.max_new_tokens)
        for (record, _), passage in zip(batch, replies, strict=True):
            if not passage:
                bad(BadRecordError(f"{record.where}: the generator wrote an empty passage"))
                continue
            query = {"text": record.question, "image": os.path.relpath(record.image.resolve(), folder)}
            row = {"query": query, "pos": [{"text": passage}], "instruction": o.instruction, "task": o.task}
            row = {k: v for k, v in row.items() if v is not None}
            row.update(id=record.id, question=record.question, answer=record.answer)
            lines.append(json.dumps(row, ensure_ascii=False) + "\n")
        batch.clear()

    for i, (lineno, obj) in enumerate(chunk):
        try:
            record = _record(obj, f"{source}:{lineno}", o, root)
            batch.append((record, load_image(record.image, record.where)))
        except (BadRecordError, BadInputError) as err:  # an image's names the record and the path too
            bad(err)
        if batch and (len(batch) == o.batch_size or i == len(chunk) - 1):
            run_batch()
    return lines, len(skipped)


def build_response_to_passage(
    input_path: str | os.PathLike,
    out_path: str | os.PathLike,
    generator: Generator | Callable[[], Generator],
    options: PassageOptions | None = None,
    *,
    overwrite: bool = False,
    on_chunk: Callable[[int, int], None] | None = None,
) -> Report:
    """Write the pair-format file ``out_path`` from the VQA records (JSONL) of ``input_path``; ``generator``
    is a :class:`Generator` or a function loading one (called only once the build is to go ahead).

    A bad record (a field missing, empty or not a string, a missing or unreadable image, an empty
    passage) raises :class:`BadRecordError` naming ``file:line`` and its id, or with ``skip_bad`` is
    left out and counted; a line that is not JSON always raises. An interrupted build resumes (see the
    module's doc); a finished ``out_path`` is refused, an unfinished one's progress kept, unless
    ``overwrite``. ``on_chunk(chunk_index, records_done)`` runs after each chunk is committed."""
    options = options or PassageOptions()
    source, out = Path(input_path), Path(out_path)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists (a finished build): pass overwrite (--overwrite) to build it again")
    root = Path(options.images_root) if options.images_root else source.parent
    digest = hashlib.sha256(source.read_bytes()).hexdigest()  # (a missing input fails before a model loads)
    settings = {**asdict(options), "skip_bad": None, "images_root": str(root.resolve()), "input_sha256": digest}
    if not hasattr(generator, "generate"):
        generator = generator()
    progress = _Progress(out, {**settings, **generator.settings})
    resumed_at, done = progress.open(overwrite), progress.state  # done: the counts, updated by each commit
    records = itertools.islice(json_lines(source), resumed_at, None)
    for index in itertools.count(resumed_at // options.chunk_size):
        chunk = list(itertools.islice(records, options.chunk_size))
        if not chunk:
            break
        progress.commit(*_chunk_lines(chunk, source, out.resolve().parent, generator, options), records=len(chunk))
        logger.info("%s: %d records done, %d pairs, %d skipped", out, done["records"], done["rows"], done["skipped"])
        if on_chunk is not None:
            on_chunk(index, done["records"])
    if done["rows"] == 0:
        raise DataFormatError(f"{source}: no record became a pair ({done['skipped']} skipped)")
    os.replace(progress.partial, out)
    progress.path.unlink()
    return Report(done["rows"], done["skipped"], resumed_at)
