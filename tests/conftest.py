"""Shared fixtures.

Tests marked ``@pytest.mark.slow`` launch processes or train for a while (the DeepSpeed launcher,
``jfe demo``). A fast local selection leaves them out::

    HF_HUB_OFFLINE=1 python -m pytest -m "not slow"

CI runs everything (plain ``pytest``). The first test that calls ranx pays its one-off JIT
compilation (up to ~25 s on two cores), whichever test that is.
"""

import json
import os
import socket

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pytest
from PIL import Image

from jfe.tiny import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A random-init tiny Qwen2-VL checkpoint, built once per test session."""
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen2-vl", arch="qwen2_vl", seed=0)


@pytest.fixture(scope="session")
def tiny_model_dirs(tiny_model_dir, tmp_path_factory):
    """A tiny checkpoint of every registered family, keyed by its model type."""
    from jfe import backbones

    dirs = {"qwen2_vl": tiny_model_dir}
    for arch in backbones.names():
        if arch not in dirs:
            dirs[arch] = build_tiny_model(tmp_path_factory.mktemp("models") / f"tiny-{arch}", arch=arch, seed=0)
    return dirs


def make_image(seed: int, size: tuple[int, int] = (16, 16)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8))


@pytest.fixture
def images():
    return [make_image(i, size) for i, size in enumerate([(16, 16), (8, 24), (32, 32), (12, 12)])]


INSTRUCTIONS = (
    "query_modality\tcand_modality\tdataset_name\tdataset_id\tprompt_1\tprompt_2\tprompt_3\tprompt_4\n"
    "text\timage\ttoy_t2i\t1\tFind the image.\tShow the picture.\tRetrieve the photo.\tGet the image.\n"
    "image\ttext\ttoy_i2t\t2\tCaption this.\tDescribe it.\tName it.\tSay what it is.\n"
    "image,text\timage\ttoy_it2i\t3\tApply the change.\tEdit the image.\tTransform it.\tModify it.\n"
)


def _write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="session")
def free_port():
    """A callable returning a TCP port on 127.0.0.1 that was free a moment ago (for a rendezvous)."""

    def pick() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    return pick


@pytest.fixture
def mbeir_root(tmp_path):
    """A hand-written M-BEIR sample: three datasets, all three query modalities, null fields."""
    return write_mbeir_sample(tmp_path / "mbeir")


def write_mbeir_sample(root):
    """Write the ``mbeir_root`` sample under ``root`` (for fixtures of a wider scope); returns ``root``."""
    (root / "images").mkdir(parents=True)
    for i in range(8):
        make_image(100 + i).save(root / "images" / f"{i}.png")

    def query(qid, txt, img, modality, pos, neg, task):
        return {
            "qid": qid,
            "query_txt": txt,
            "query_img_path": img,
            "query_modality": modality,
            "query_src_content": None,
            "pos_cand_list": pos,
            "neg_cand_list": neg,
            "task_id": task,
        }

    def cand(did, txt, img, modality):
        return {"did": did, "txt": txt, "img_path": img, "modality": modality, "src_content": None}

    _write_jsonl(
        root / "query/test/mbeir_toy_t2i_test.jsonl",
        [
            query("1:1", "a red seven", None, "text", ["1:10"], ["1:11"], 0),
            query("1:2", "a blue three", None, "text", ["1:11"], [], 0),
        ],
    )
    _write_jsonl(
        root / "cand_pool/local/mbeir_toy_t2i_test_cand_pool.jsonl",
        [cand("1:10", None, "images/0.png", "image"), cand("1:11", None, "images/1.png", "image")],
    )
    _write_jsonl(
        root / "query/test/mbeir_toy_i2t_test.jsonl",
        [query("2:1", None, "images/2.png", "image", ["2:10"], ["2:11", "2:12"], 3)],
    )
    _write_jsonl(
        root / "cand_pool/local/mbeir_toy_i2t_test_cand_pool.jsonl",
        [
            cand("2:10", "a seven", None, "text"),
            cand("2:11", "a one", None, "text"),
            cand("2:12", "a two", None, "text"),
        ],
    )
    _write_jsonl(
        root / "query/test/mbeir_toy_it2i_test.jsonl",
        [query("3:1", "rotated", "images/3.png", "image,text", ["3:10"], ["3:11"], 7)],
    )
    _write_jsonl(
        root / "cand_pool/local/mbeir_toy_it2i_test_cand_pool.jsonl",
        [cand("3:10", None, "images/4.png", "image"), cand("3:11", None, "images/5.png", "image")],
    )
    _write_jsonl(
        root / "cand_pool/global/mbeir_union_test_cand_pool.jsonl",
        [
            cand(d, t, i, m)
            for d, t, i, m in [
                ("1:10", None, "images/0.png", "image"),
                ("1:11", None, "images/1.png", "image"),
                ("2:10", "a seven", None, "text"),
                ("2:11", "a one", None, "text"),
                ("2:12", "a two", None, "text"),
                ("3:10", None, "images/4.png", "image"),
                ("3:11", None, "images/5.png", "image"),
            ]
        ],
    )
    qrels = root / "qrels/test"
    qrels.mkdir(parents=True)
    (qrels / "mbeir_toy_t2i_test_qrels.txt").write_text("1:1 0 1:10 1 0\n1:2 0 1:11 1 0\n")
    (qrels / "mbeir_toy_i2t_test_qrels.txt").write_text("2:1 0 2:10 1 3\n")
    (qrels / "mbeir_toy_it2i_test_qrels.txt").write_text("3:1 0 3:10 1 7\n")
    (root / "instructions").mkdir()
    (root / "instructions/query_instructions.tsv").write_text(INSTRUCTIONS)
    return root


@pytest.fixture(scope="session")
def mixed_pairs(tmp_path_factory):
    """Pair-format data whose candidates mix images (1 in 4) and texts, so some rank slices of a
    batch carry no image at all while others do."""
    folder = tmp_path_factory.mktemp("pairs")
    rows = []
    for k in range(64):
        if k % 4 == 0:
            make_image(1000 + k).save(folder / f"img{k}.png")
            pos = [{"image": f"img{k}.png"}]
        else:
            pos = [{"text": f"doc {k}"}]
        rows.append({"query": {"text": f"item {k}"}, "pos": pos})
    path = folder / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def ranx_metrics(run, qrels, ks) -> dict[str, float]:
    """ranx's hit rate at ``ks`` (UniIR's Recall@k), MRR@10 and nDCG@10, under jfe's metric names:
    the independent oracle of jfe's scoring."""
    import ranx

    metrics = [f"hit_rate@{k}" for k in ks] + ["mrr@10", "ndcg@10"]
    got = ranx.evaluate(ranx.Qrels(qrels), ranx.Run(run), metrics, make_comparable=True)
    return {m.replace("hit_rate", "recall"): float(v) for m, v in got.items()}
