"""A small M-BEIR root with the quirks of the published files, end to end on the union pool.

Quirks: union-pool rows of VisualNews with no ``txt`` and no ``src_content`` first, fields that
appear only later and fields jfe does not know; three datasets sharing task 0 (VisualNews,
Fashion200K, MSCOCO); an OVEN query listing an InfoSeek positive; a TSV whose header names differ.
The table must be UniIR's: a row per (dataset, task), @10/20/50 for Fashion200K, equal to ranx
run on each subset of the runs end-to-end eval writes in UniIR's 7 columns.
"""

import json

import pytest
import ranx

from jfe import Embedder
from jfe.cli import main
from jfe.retrieval.scoring import HEADLINE
from tests.conftest import make_image

DATASETS = {  # file name -> (task id, query modality); the dataset ids are UniIR's, in the qids
    "visualnews_task0": (0, "text"),
    "fashion200k_task0": (0, "text"),
    "mscoco_task0": (0, "text"),
    "oven_task8": (8, "image,text"),
}


def _jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    root = tmp_path_factory.mktemp("mbeir")
    (root / "mbeir_images").mkdir()
    for i in range(12):
        make_image(200 + i).save(root / "mbeir_images" / f"{i}.jpg")
    # the union pool starts with VisualNews images that have neither txt nor src_content
    pool = [{"did": f"0:{i}", "img_path": f"mbeir_images/{i}.jpg", "modality": "image"} for i in range(3)]
    pool += [
        {"did": f"1:{i}", "img_path": f"mbeir_images/{3 + i}.jpg", "modality": "image", "txt": None} for i in range(3)
    ]
    pool += [
        {"did": f"9:{i}", "img_path": f"mbeir_images/{6 + i}.jpg", "modality": "image", "src_content": '{"id": 1}'}
        for i in range(3)
    ]
    pool += [
        {
            "did": "5:0",
            "txt": "the eiffel tower",
            "img_path": "mbeir_images/9.jpg",
            "modality": "image,text",
            "extra": [1],
        },
        {"did": "5:1", "txt": "a lighthouse", "img_path": "mbeir_images/10.jpg", "modality": "image,text"},
        {"did": "6:0", "txt": "Paris landmark", "img_path": None, "modality": "text"},
    ]
    _jsonl(root / "cand_pool/global/mbeir_union_test_cand_pool.jsonl", pool)
    queries = {
        "visualnews_task0": [("0:1", "Obama speaks", None, ["0:0"]), ("0:2", "a flood", None, ["0:2"])],
        "fashion200k_task0": [("1:1", "red dress", None, ["1:1"]), ("1:2", "blue jeans", None, ["1:2"])],
        "mscoco_task0": [("9:1", "a dog on grass", None, ["9:0"]), ("9:2", "two cats", None, ["9:1", "9:2"])],
        # OVEN lists an InfoSeek positive too (UniIR keys its instruction by the OVEN one)
        "oven_task8": [("5:1", "what is this building?", "mbeir_images/11.jpg", ["6:0", "5:0"])],
    }
    for name, rows in queries.items():
        task, modality = DATASETS[name]
        _jsonl(
            root / f"query/test/mbeir_{name}_test.jsonl",
            [
                {"qid": qid, "query_txt": txt, "query_img_path": img, "query_modality": modality,
                 "pos_cand_list": pos, "neg_cand_list": [], "task_id": task, "unknown_field": {"a": 1}}
                for qid, txt, img, pos in rows
            ],
        )  # fmt: skip
        qrels = "".join(f"{qid} 0 {d} 1 {task}\n" for qid, _, _, pos in rows for d in pos)
        (root / "qrels/test").mkdir(parents=True, exist_ok=True)
        (root / f"qrels/test/mbeir_{name}_test_qrels.txt").write_text(qrels)
    (root / "instructions").mkdir()
    (root / "instructions/query_instructions.tsv").write_text(
        "query modality\tcandidate modality\tdataset\tid\tprompt 1\tprompt 2\n"  # UniIR reads by position
        "text\timage\tVisualNews\t0\tretrieve a news image\tfind the news photo\n"
        "text\timage\tFashion200K\t1\tfind the fashion item\tshow the product\n"
        "text\timage\tMSCOCO\t9\tfind the everyday image\tshow the photo\n"
        "image,text\timage,text\tOVEN\t5\tfind the Wikipedia image and text\tretrieve the entity\n"
    )
    return root


def _qrels(root, names):
    out = {}
    for name in names:
        for line in (root / f"qrels/test/mbeir_{name}_test_qrels.txt").read_text().splitlines():
            qid, _, did, rel, _ = line.split()
            out.setdefault(qid, {})[did] = int(rel)
    return out


def test_published_quirks_load_encode_and_score_as_uniir(published, tiny_model_dir, tmp_path):
    model = tmp_path / "model"
    Embedder.from_pretrained(tiny_model_dir, dtype="float32", device="cpu").save(model)
    out = tmp_path / "eval"
    args = ["eval", "--model", str(model), "--mbeir-root", str(published), "--pool", "global", "--out", str(out)]
    assert main(args) == 0
    metrics = json.loads((out / "eval.json").read_text())["metrics"]
    assert list(metrics) == ["VisualNews", "Fashion200K", "OVEN", "MSCOCO", "average", HEADLINE]
    assert {"recall@10", "recall@20", "recall@50"} <= set(metrics["Fashion200K"]) and "recall@1" not in metrics[
        "Fashion200K"
    ]
    assert {"recall@1", "recall@5", "recall@10"} <= set(metrics["MSCOCO"])
    # an independent computation on each dataset's subset of the 7-column runs end-to-end eval wrote
    runs = sorted((out / "runs").glob("*.trec"))
    assert all(len(line.split()) == 7 for path in runs for line in path.read_text().splitlines())
    for name, label in [("visualnews_task0", "VisualNews"), ("fashion200k_task0", "Fashion200K"),
                        ("mscoco_task0", "MSCOCO"), ("oven_task8", "OVEN")]:  # fmt: skip
        run = {}
        for line in (out / "runs" / f"{name}.trec").read_text().splitlines():
            qid, _, did, _, score, _, _ = line.split()
            run.setdefault(qid, {})[did] = float(score)
        ks = (10, 20, 50) if label == "Fashion200K" else (1, 5, 10)
        expected = ranx.evaluate(ranx.Qrels(_qrels(published, [name])), ranx.Run(run), [f"hit_rate@{k}" for k in ks])
        for k in ks:
            assert metrics[label][f"recall@{k}"] == pytest.approx(expected[f"hit_rate@{k}"], abs=1e-9), (label, k)
    r5 = [metrics[d]["recall@5"] for d in ("VisualNews", "MSCOCO", "OVEN")] + [metrics["Fashion200K"]["recall@10"]]
    assert metrics[HEADLINE]["recall"] == pytest.approx(sum(r5) / 4)
    # jfe eval --run on those runs prints the same table
    qrels = [str(p) for p in sorted((published / "qrels/test").glob("*.txt"))]
    again = tmp_path / "again.json"
    tsv = str(published / "instructions/query_instructions.tsv")
    run_args = ["eval", "--run", *map(str, runs), "--qrels", *qrels, "--instruction-file", tsv, "--out", str(again)]
    assert main(run_args) == 0
    assert json.loads(again.read_text()) == metrics
