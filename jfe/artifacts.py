"""The files jfe's commands leave behind for each other, by name and typed schema, in one place.

=========================  ========================================  ==================================
file                       written by                                read by
=========================  ========================================  ==================================
``jfe_config.json``        ``Embedder.save``                         ``Embedder.from_pretrained``
``jfe_train_config.json``  training, into ``output_dir`` at start    ``jfe export`` of a checkpoint
``jfe_train.json``         training, into ``output_dir/final``       ``jfe export``, the model card
``eval.json``              ``jfe eval --model``, into ``--out``      ``jfe export --eval``
``jfe_eval.json``          ``jfe export --eval`` (a copy)            the model card
``jfe_temperature.json``   training, beside a learned temperature    users
``results.json``           ``jfe demo``                              users, the demo's tests
=========================  ========================================  ==================================

Each schema is a dataclass with ``write`` (atomic) and ``read`` (an error names the file).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from jfe.atomic import atomic_write_text

T = TypeVar("T", bound="Artifact")

# Its schema is jfe.embedder.EmbedderConfig, saved beside the weights of every model folder.
EMBEDDER_CONFIG = "jfe_config.json"


class Artifact:
    """A JSON file with a fixed name; subclasses are dataclasses and set ``FILE``."""

    FILE: ClassVar[str]

    @classmethod
    def path_in(cls, folder: str | os.PathLike) -> Path:
        return Path(folder) / cls.FILE

    def write(self, folder: str | os.PathLike, name: str | None = None) -> Path:
        """Write into ``folder`` under ``FILE`` (or ``name``); readers never see half a file."""
        path = Path(folder) / (name or self.FILE)
        atomic_write_text(path, json.dumps(dataclasses.asdict(self), indent=2, default=str) + "\n")
        return path

    @classmethod
    def read(cls: type[T], path: str | os.PathLike) -> T:
        """Read ``path`` (a file, or a folder holding ``FILE``)."""
        path = Path(path)
        if path.is_dir():
            path = path / cls.FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: not found") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        required = {f.name for f in fields if f.default is MISSING and f.default_factory is MISSING}
        if not isinstance(data, dict) or not required <= set(data):
            have = set(data) if isinstance(data, dict) else set()
            raise ValueError(f"{path}: not a {cls.FILE} file (missing {', '.join(sorted(required - have))})")
        # keys a newer jfe added are ignored, so an older jfe still reads the file
        known = {f.name for f in fields}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def find(cls: type[T], folder: str | os.PathLike) -> T | None:
        """The artifact in ``folder``, or None if the folder has none."""
        path = cls.path_in(folder)
        return cls.read(path) if path.is_file() else None


@dataclass
class RunStart(Artifact):
    """A run's options and resolved base model, so any checkpoint of it can be exported."""

    FILE: ClassVar[str] = "jfe_train_config.json"
    config: dict[str, Any]  # jfe.train.config.TrainConfig.to_dict(); read back with TrainConfig.from_dict
    base_model: str


@dataclass
class TrainSummary(Artifact):
    """What a finished training run (or an exported checkpoint of one) did."""

    FILE: ClassVar[str] = "jfe_train.json"
    config: dict[str, Any]  # as in RunStart
    base_model: str
    global_steps: int | None = None
    loss_history: list[dict[str, Any]] = field(default_factory=list)
    world_size: int = 1
    train_runtime: float | None = None
    skipped_inputs: dict[str, int] = field(default_factory=dict)
    hardware: str | None = None
    checkpoint: str | None = None  # set when exported from a checkpoint instead of the final folder

    @property
    def losses(self) -> list[float]:
        return [entry["loss"] for entry in self.loss_history if "loss" in entry]


@dataclass
class EvalReport(Artifact):
    """``jfe eval --model``'s results: per-task metrics (plus ``average``) and the modality probe."""

    FILE: ClassVar[str] = "eval.json"
    EXPORTED: ClassVar[str] = "jfe_eval.json"  # its name inside an exported model folder
    metrics: dict[str, dict[str, float]]
    model: str | None = None
    split: str = "test"
    pool: str = "local"
    probe: dict[str, Any] | None = None  # {"ablate": "image"|"text", "tasks": {task: {metric, ablated, change}}}
    instructions: dict[str, Any] | None = None  # {"policy": "uniir"|"first"|"all", "seed": int, "uniir_format": bool}
    dims: dict[str, dict[str, dict[str, float]]] | None = None  # Matryoshka: {dim: metrics as above}
    vectors: str = "single"  # what was scored: single vectors, or multi (token vectors, MeanMaxSim)

    @classmethod
    def find_exported(cls, folder: str | os.PathLike) -> EvalReport | None:
        path = Path(folder) / cls.EXPORTED
        return cls.read(path) if path.is_file() else None


@dataclass
class LearnedTemperature(Artifact):
    FILE: ClassVar[str] = "jfe_temperature.json"
    temperature: float


@dataclass
class DemoResults(Artifact):
    """``jfe demo``'s table: Hit@1/@5 per stage and task, and the probe's Hit@1 per fusion task."""

    FILE: ClassVar[str] = "results.json"
    stages: dict[str, dict[str, dict[str, float]]]
    ablation: dict[str, dict[str, dict[str, float]]]
    seconds: float = 0.0
    schedule: dict = field(default_factory=dict)  # jfe.demo.Schedule.describe(): its name and steps
