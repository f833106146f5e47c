"""jfe.retrieval.evaluate: UniIR's cutoffs, the modality probe's pieces, and evaluate_mbeir scored by ranx."""

import json

import numpy as np
import pytest

from jfe import Embedder
from jfe.retrieval.encode import EncodeItem
from jfe.retrieval.evaluate import ablate, evaluate_mbeir, probe_table
from jfe.retrieval.items import TextStyle
from jfe.retrieval.scoring import recall_ks
from tests.conftest import ranx_metrics

TOY = ["toy_i2t", "toy_it2i", "toy_t2i"]
BY_ID = ["toy_t2i", "toy_i2t", "toy_it2i"]  # the sample's dataset ids are 1, 2, 3: the table's row order


@pytest.mark.parametrize(
    ("dataset", "ks"),
    [
        ("fashion200k", (10, 20, 50)),
        ("FashionIQ", (10, 20, 50)),
        ("mbeir_fashion200k_task0", (10, 20, 50)),
        ("mscoco_t2i", (1, 5, 10)),
        ("webqa", (1, 5, 10)),
        ("digits_it2i", (1, 5, 10)),
    ],
)
def test_recall_ks_fashion_at_10_20_50_others_at_1_5_10(dataset, ks):
    assert recall_ks(dataset) == ks


ITEMS = [
    EncodeItem("1:1", "a red seven", "/img/7.png", "Find it."),
    EncodeItem("1:2", "text only", None, "Find it."),
    EncodeItem("1:3", None, "/img/3.png", None),
]


def test_ablate_removes_the_modality_from_image_and_text_items_only():
    no_image = ablate(ITEMS, "image")
    assert no_image[0] == EncodeItem("1:1", "a red seven", None, "Find it.")  # id and instruction kept
    assert no_image[1:] == ITEMS[1:]  # a text-only or image-only item keeps what it has
    no_text = ablate(ITEMS, "text")
    assert no_text[0] == EncodeItem("1:1", None, "/img/7.png", "Find it.")
    assert no_text[1:] == ITEMS[1:]
    assert ablate(ITEMS, None) == ITEMS
    assert ITEMS[0].image == "/img/7.png"  # the input list is not changed


@pytest.mark.parametrize("modality", ["audio", "Image", "", "instruction"])
def test_ablate_refuses_other_modality_names(modality):
    with pytest.raises(ValueError, match=r"^ablate must be 'image' or 'text', got " + repr(modality)):
        ablate(ITEMS, modality)


def test_probe_table_is_the_change_per_task_and_leaves_out_tasks_not_ablated():
    full = {
        "webqa": {"recall@1": 0.6, "recall@5": 0.9},
        "oven": {"recall@1": 0.4, "recall@5": 0.7},
        "fashioniq": {"recall@10": 0.3},
        "average": {"recall@1": 0.5, "recall@5": 0.8},
    }
    ablated = {
        "webqa": {"recall@1": 0.25, "recall@5": 0.5},
        "fashioniq": {"recall@10": 0.1},
        "average": {"recall@1": 0.25},
    }
    table = probe_table(full, ablated)
    assert list(table) == ["webqa", "average"]  # oven was not ablated; fashioniq has no recall@1
    assert table["webqa"] == pytest.approx({"recall@1": 0.6, "recall@1 ablated": 0.25, "change": 0.25 - 0.6})
    assert table["average"]["change"] == pytest.approx(-0.25)
    by_10 = probe_table(full, ablated, metric="recall@10")
    assert by_10 == {"fashioniq": pytest.approx({"recall@10": 0.3, "recall@10 ablated": 0.1, "change": -0.2})}


@pytest.fixture(scope="module")
def embedder(tiny_model_dir, tmp_path_factory):
    saved = Embedder.from_pretrained(tiny_model_dir, dtype="float32", device="cpu").save(
        tmp_path_factory.mktemp("model") / "m"
    )
    return Embedder.from_pretrained(saved, dtype="float32", device="cpu")


def _read_trec(path, tasks=None):
    """The run of a TREC file, or of a UniIR one whose 7th column must then be ``tasks[qid]``."""
    run = {}
    for line in path.read_text().splitlines():
        qid, _, did, _rank, score, *rest = line.split()
        assert len(rest) == (1 if tasks is None else 2), line
        if tasks is not None:
            assert int(rest[1]) == tasks[qid], line
        run.setdefault(qid, {})[did] = float(score)
    return run


def _read_qrels(path):
    qrels, tasks = {}, {}
    for line in path.read_text().splitlines():
        qid, _, did, rel, task = line.split()
        qrels.setdefault(qid, {})[did] = int(rel)
        tasks[qid] = int(task)
    return qrels, tasks


def _add_fashion_copy(root):
    """A copy of toy_t2i as dataset 7, named toy_fashion_t2i by the TSV: UniIR scores it at @10/@20/@50."""
    for kind, pattern in [
        ("query/test", "mbeir_{}_test.jsonl"),
        ("cand_pool/local", "mbeir_{}_test_cand_pool.jsonl"),
        ("qrels/test", "mbeir_{}_test_qrels.txt"),
    ]:
        text = (root / kind / pattern.format("toy_t2i")).read_text()
        (root / kind / pattern.format("toy_fashion_t2i")).write_text(text.replace('"1:', '"7:').replace("1:", "7:"))
    union = root / "cand_pool/global/mbeir_union_test_cand_pool.jsonl"
    copies = [line.replace('"1:', '"7:') for line in union.read_text().splitlines(keepends=True) if '"1:' in line]
    union.write_text(union.read_text() + "".join(copies))
    tsv = root / "instructions/query_instructions.tsv"
    tsv.write_text(tsv.read_text() + "text\timage\ttoy_fashion_t2i\t7\tFind the garment.\n")


@pytest.mark.parametrize(("pool", "run_format"), [("local", "trec"), ("global", "uniir")])
def test_evaluate_mbeir_equals_ranx_on_the_runs_it_writes(embedder, mbeir_root, tmp_path, pool, run_format):
    _add_fashion_copy(mbeir_root)
    runs = tmp_path / "runs"
    table = evaluate_mbeir(embedder, mbeir_root, split="test", pool=pool, runs_dir=runs, run_format=run_format)
    names = [*BY_ID, "toy_fashion_t2i"]
    assert list(table) == [*names, "average"]
    for name in names:
        qrels, tasks = _read_qrels(mbeir_root / f"qrels/test/mbeir_{name}_test_qrels.txt")
        run = _read_trec(runs / f"{name}.trec", tasks if run_format == "uniir" else None)
        tag = (runs / f"{name}.trec").read_text().split()[5]
        assert tag == f"mbeir_{name}_{'union' if pool == 'global' else 'single'}_pool_test_k50"  # UniIR's run id
        assert set(run) == set(qrels)
        # every candidate of the pool searched comes back (k=50 is above the pool sizes)
        pool_size = 9 if pool == "global" else {"toy_i2t": 3}.get(name, 2)
        assert all(len(docs) == pool_size for docs in run.values())
        assert table[name] == pytest.approx(ranx_metrics(run, qrels, recall_ks(name)), abs=1e-6), name
    assert "recall@1" not in table["toy_fashion_t2i"] and "recall@50" in table["toy_fashion_t2i"]
    # the macro average over pairs, of the metrics every pair has (the fashion copy has no @1 or @5)
    assert set(table["average"]) == {"recall@10", "mrr@10", "ndcg@10"}
    for metric, value in table["average"].items():
        assert value == pytest.approx(np.mean([table[n][metric] for n in names]), abs=1e-9), metric


def test_end_to_end_table_is_what_eval_run_prints_for_its_runs(embedder, mbeir_root, tmp_path, capsys):
    from jfe.retrieval.evaluate import main
    from jfe.retrieval.metrics import to_markdown
    from jfe.retrieval.scoring import with_headline

    _add_fashion_copy(mbeir_root)
    runs = tmp_path / "runs"
    table = evaluate_mbeir(embedder, mbeir_root, runs_dir=runs, run_format="uniir")
    names = [*BY_ID, "toy_fashion_t2i"]
    capsys.readouterr()
    assert main(["--run", *(str(runs / f"{n}.trec") for n in names),
                 "--qrels", *(str(mbeir_root / f"qrels/test/mbeir_{n}_test_qrels.txt") for n in names),
                 "--instruction-file", str(mbeir_root / "instructions/query_instructions.tsv"),
                 "--out", str(tmp_path / "eval.json")]) == 0  # fmt: skip
    assert json.loads((tmp_path / "eval.json").read_text()) == with_headline(table)
    n = len({line.split()[0] for n in names for line in (mbeir_root / f"qrels/test/mbeir_{n}_test_qrels.txt").open()})
    queries = f"queries: {n} scored; 0 in the qrels but not the run (scored 0); 0 in the run but not the qrels"
    queries += " (ignored)"
    assert capsys.readouterr().out == to_markdown(with_headline(table)) + "\n" + queries + "\n"


def test_eval_run_counts_unmatched_queries_and_refuses_disjoint_qrels(tmp_path, capsys, caplog):
    from jfe.retrieval.evaluate import main

    run, qrels, other = tmp_path / "run.trec", tmp_path / "qrels.txt", tmp_path / "other_qrels.txt"
    run.write_text("1:1 Q0 1:10 1 0.9 r\n1:2 Q0 1:10 1 0.8 r\n9:9 Q0 1:10 1 0.7 r\n")
    qrels.write_text("1:1 0 1:10 1 0\n1:2 0 1:11 1 0\n1:3 0 1:10 1 0\n")
    assert main(["--run", str(run), "--qrels", str(qrels)]) == 0
    out = capsys.readouterr().out
    assert "queries: 2 scored; 1 in the qrels but not the run (scored 0); 1 in the run but not the qrels" in out
    assert "1 of the 3 qrels queries have no ranking in the run" in caplog.text
    other.write_text("5:1 0 5:10 1 0\n")
    with pytest.raises(ValueError, match=r"run\.trec\) and the qrels \(.*other_qrels\.txt\) share no query id"):
        main(["--run", str(run), "--qrels", str(other)])


def test_evaluate_mbeir_scores_are_cosines_with_the_first_instruction(embedder, mbeir_root, tmp_path):
    raw = TextStyle("first", uniir_format=False)
    evaluate_mbeir(embedder, mbeir_root, datasets=["toy_it2i"], runs_dir=tmp_path / "full", style=raw)
    evaluate_mbeir(
        embedder, mbeir_root, datasets=["toy_it2i"], runs_dir=tmp_path / "ablated", ablate_modality="image", style=raw
    )
    docs = embedder.encode([{"image": str(mbeir_root / f"images/{i}.png")} for i in (4, 5)])
    docs = dict(zip(["3:10", "3:11"], docs, strict=True))
    query = {"text": "rotated", "image": str(mbeir_root / "images/3.png")}
    expected = {
        "full": embedder.encode([query], instruction="Apply the change.")[0],
        # the probe embeds the composed query without its image, instruction kept
        "ablated": embedder.encode([{"text": "rotated"}], instruction="Apply the change.")[0],
    }
    for kind, q in expected.items():
        run = _read_trec(tmp_path / kind / "toy_it2i.trec")["3:1"]
        assert run == pytest.approx({d: float(q @ v) for d, v in docs.items()}, abs=2e-6), kind
        assert list(run) == sorted(docs, key=lambda d: -float(q @ docs[d]))


def test_evaluate_mbeir_embeds_queries_as_uniir_by_default(embedder, mbeir_root, tmp_path):
    """The default style: the prompt drawn for the qid, and UniIR's format_string on the joined text."""
    from jfe.data.instructions import Instructions
    from jfe.data.mbeir import MBeirLayout, load_queries
    from jfe.data.uniir import format_string

    layout = MBeirLayout(mbeir_root)
    evaluate_mbeir(embedder, mbeir_root, datasets=["toy_it2i"], runs_dir=tmp_path)
    (q,) = load_queries(layout.query_file("toy_it2i", "test"), mbeir_root)
    prompt = format_string(Instructions.load(layout.instructions_file).for_query(q, "uniir", seed=0))
    docs = embedder.encode([{"image": str(mbeir_root / f"images/{i}.png")} for i in (4, 5)])
    vec = embedder.encode([{"text": "rotated.", "image": str(mbeir_root / "images/3.png")}], instruction=prompt)[0]
    run = _read_trec(tmp_path / "toy_it2i.trec")["3:1"]
    assert run == pytest.approx({d: float(vec @ v) for d, v in zip(["3:10", "3:11"], docs, strict=True)}, abs=2e-6)


def test_multimodal_only_scores_only_image_and_text_queries(embedder, mbeir_root):
    full = evaluate_mbeir(embedder, mbeir_root)
    probed = evaluate_mbeir(embedder, mbeir_root, multimodal_only=True)
    assert list(probed) == ["toy_it2i", "average"]
    assert probed["toy_it2i"] == full["toy_it2i"] == probed["average"]


def test_cached_pool_shards_give_the_same_table(embedder, mbeir_root, tmp_path):
    direct = evaluate_mbeir(embedder, mbeir_root)
    work = tmp_path / "work"
    first = evaluate_mbeir(embedder, mbeir_root, work_dir=work)
    assert sorted(p.name for p in (work / "uniir-format").iterdir()) == TOY  # pool caches are per query file
    stamps = {p: p.stat().st_mtime_ns for p in work.rglob("meta.json")}
    again = evaluate_mbeir(embedder, mbeir_root, work_dir=work)
    assert {p: p.stat().st_mtime_ns for p in work.rglob("meta.json")} == stamps  # reused, not re-encoded
    assert first == again and list(direct) == list(first)
    for task, row in direct.items():
        assert first[task] == pytest.approx(row, abs=1e-6), task


def test_over_prompts_reports_the_mean_and_the_spread():
    from jfe.retrieval.scoring import over_prompts

    tables = [{"a": {"recall@5": 0.5, "mrr@10": 0.2}}, {"a": {"recall@5": 0.7, "mrr@10": 0.4}, "b": {}}]
    out = over_prompts(tables)
    assert out == {"a": pytest.approx({"recall@5": 0.6, "recall@5 spread": 0.2, "mrr@10": 0.3, "mrr@10 spread": 0.2})}


def test_policy_all_scores_every_prompt_and_eval_json_records_the_policy(tiny_model_dir, mbeir_root, tmp_path):
    import json

    from jfe import Embedder
    from jfe.cli import main

    model = tmp_path / "m"
    Embedder.from_pretrained(tiny_model_dir, dtype="float32", device="cpu").save(model)
    out = tmp_path / "eval"
    args = ["eval", "--model", str(model), "--mbeir-root", str(mbeir_root), "--out", str(out)]
    assert main([*args, "--instruction-policy", "all", "--seed", "3", "--datasets", "toy_i2t"]) == 0
    result = json.loads((out / "eval.json").read_text())
    assert result["instructions"] == {"policy": "all", "seed": 3, "uniir_format": True}
    assert "recall@1 spread" in result["metrics"]["toy_i2t"]
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["prompt_1", "prompt_2", "prompt_3", "prompt_4"]
