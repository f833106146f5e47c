"""The README's retrieval commands on the hand-written M-BEIR sample, each checked against an
outside reference: safetensors for the shards, FAISS called directly for the index and the
search, numpy cosine similarities for the run's scores, ranx for the metrics."""

import json

import faiss
import numpy as np
import pytest
import ranx
from safetensors.numpy import load_file

from jfe import Embedder
from jfe.cli import main
from jfe.data.instructions import Instructions
from jfe.data.mbeir import load_queries
from jfe.data.uniir import format_query, format_string
from jfe.retrieval.metrics import to_markdown
from jfe.retrieval.mine import read_mined
from jfe.retrieval.scoring import HEADLINE
from jfe.retrieval.trec import read_run
from tests.retrieval.conftest import SAMPLE_TASKS

TASKS = SAMPLE_TASKS


def _trec_lines(path):
    """(qid, did, rank, score) rows of a TREC run, parsed here rather than by jfe."""
    rows = []
    for line in path.read_text().splitlines():
        qid, q0, did, rank, score, _tag = line.split()
        assert q0 == "Q0"
        rows.append((qid, did, int(rank), float(score)))
    return rows


def _ranking(path):
    """{qid: [(did, score), ...] in rank order}."""
    out = {}
    for qid, did, _rank, score in sorted(_trec_lines(path), key=lambda r: (r[0], r[2])):
        out.setdefault(qid, []).append((did, score))
    return out


@pytest.fixture(scope="module")
def paths(sample):
    return {
        "pool": sample / "cand_pool/global/mbeir_union_test_cand_pool.jsonl",
        "queries": sample / "all_queries.jsonl",
        "tsv": sample / "instructions/query_instructions.tsv",
        "qrels": [sample / f"qrels/test/mbeir_{name}_test_qrels.txt" for name in TASKS],
    }


@pytest.fixture(scope="module")
def saved_model(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "m"
    Embedder.from_pretrained(tiny_model_dir, dtype="float32", device="cpu").save(out)
    return out


@pytest.fixture(scope="module")
def model(saved_model):
    return Embedder.from_pretrained(saved_model, dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def pool_rows(sample, paths):
    """{did: (text, image path)} read straight from the pool file, the text formatted as UniIR formats it."""
    rows = [json.loads(line) for line in paths["pool"].read_text().splitlines()]
    return {
        r["did"]: (format_string(r["txt"]) or None, str(sample / r["img_path"]) if r["img_path"] else None)
        for r in rows
    }


@pytest.fixture(scope="module")
def query_rows(sample, paths):
    """{qid: (text, image path, dataset name, instruction)}: the query files' texts and the prompt of the default
    policy (UniIR's draw, seeded by the qid), joined and formatted as UniIR does."""
    table = Instructions.load(paths["tsv"])
    out = {}
    for name in TASKS:
        for q in load_queries(sample / f"query/test/mbeir_{name}_test.jsonl", sample):
            instruction, text = format_query(table.for_query(q, "uniir", seed=0), q.text)
            out[q.id] = (text, q.image, name, instruction)
    return out


def _inputs(text, image):
    return {k: v for k, v in (("text", text), ("image", image)) if v}


@pytest.fixture(scope="module")
def doc_vectors(model, pool_rows):
    """{did: Embedder.encode of that candidate}."""
    vecs = model.encode([_inputs(*pool_rows[d]) for d in pool_rows])
    return dict(zip(pool_rows, vecs, strict=True))


@pytest.fixture(scope="module")
def query_vectors(model, query_rows):
    """{qid: Embedder.encode of that query with its task's first instruction}."""
    return {
        qid: model.encode([_inputs(text, image)], instruction=instruction)[0]
        for qid, (text, image, _, instruction) in query_rows.items()
    }


@pytest.fixture(scope="module")
def shards(saved_model, sample, paths, tmp_path_factory):
    """`jfe encode` run as two processes would, one shard each."""
    emb = tmp_path_factory.mktemp("emb") / "emb"
    for shard in ("0", "1"):
        assert main(["encode", "--model", str(saved_model), "--data", str(paths["pool"]), "--out", str(emb),
                     "--images-root", str(sample), "--shard", shard, "--num-shards", "2",
                     "--num-workers", "0", "--dtype", "float32"]) == 0  # fmt: skip
    return emb


@pytest.fixture(scope="module")
def index_dir(shards, tmp_path_factory):
    idx = tmp_path_factory.mktemp("idx") / "idx"
    assert main(["index", "--embeddings", str(shards), "--out", str(idx), "--factory", "Flat"]) == 0
    return idx


def _search(saved_model, index_dir, sample, paths, out, *extra):
    assert main(["search", "--model", str(saved_model), "--index", str(index_dir), "--queries", str(paths["queries"]),
                 "--out", str(out), "--k", "10", "--images-root", str(sample),
                 "--instruction-file", str(paths["tsv"]), *extra]) == 0  # fmt: skip
    return out


@pytest.fixture(scope="module")
def run_file(saved_model, index_dir, sample, paths, tmp_path_factory):
    return _search(saved_model, index_dir, sample, paths, tmp_path_factory.mktemp("run") / "run.trec")


def test_two_shards_hold_every_pool_item_once_with_the_embedders_vectors(shards, pool_rows, doc_vectors):
    folders = sorted(shards.iterdir())
    assert [f.name for f in folders] == ["shard-00000-of-00002", "shard-00001-of-00002"]
    seen = []
    for folder in folders:
        ids = (folder / "ids.txt").read_text().splitlines()
        vecs = load_file(str(folder / "embeddings.safetensors"))["embeddings"]
        assert vecs.dtype == np.float32 and vecs.shape == (len(ids), len(doc_vectors["1:10"]))
        for did, vec in zip(ids, vecs, strict=True):
            assert np.abs(vec - doc_vectors[did]).max() <= 1e-5, did
        seen += ids
    assert sorted(seen) == sorted(pool_rows) and len(seen) == len(set(seen))
    # contiguous halves of the pool: the first shard takes the odd item
    first = (folders[0] / "ids.txt").read_text().splitlines()
    assert first == list(pool_rows)[:4]


def test_index_holds_the_shard_vectors_for_inner_product(index_dir, doc_vectors):
    index = faiss.read_index(str(index_dir / "index.faiss"))
    ids = (index_dir / "ids.txt").read_text().splitlines()
    assert index.metric_type == faiss.METRIC_INNER_PRODUCT and index.ntotal == len(ids) == len(doc_vectors)
    stored = index.reconstruct_n(0, index.ntotal)
    for did, vec in zip(ids, stored, strict=True):
        assert np.abs(vec - doc_vectors[did]).max() <= 1e-5, did


def test_search_equals_faiss_flat_inner_product_on_the_vectors(run_file, doc_vectors, query_vectors):
    dids = list(doc_vectors)
    flat = faiss.IndexFlatIP(len(doc_vectors[dids[0]]))
    flat.add(np.stack([doc_vectors[d] for d in dids]))
    qids = list(query_vectors)
    scores, positions = flat.search(np.stack([query_vectors[q] for q in qids]), len(dids))
    ranking = _ranking(run_file)
    assert sorted(ranking) == sorted(qids)
    for qid, row_scores, row_pos in zip(qids, scores, positions, strict=True):
        # --k 10 is above the pool size: every candidate comes back, once
        assert [d for d, _ in ranking[qid]] == [dids[p] for p in row_pos], qid
        np.testing.assert_allclose([s for _, s in ranking[qid]], row_scores, atol=2e-6)


def test_reading_the_index_whole_gives_the_same_run(run_file, saved_model, index_dir, sample, paths, tmp_path):
    whole = _search(saved_model, index_dir, sample, paths, tmp_path / "whole.trec", "--no-mmap")
    assert whole.read_text() == run_file.read_text()


def test_run_scores_are_cosine_similarities_with_the_instruction(run_file, model, pool_rows, query_rows, doc_vectors):
    def unit(x):
        return x / np.linalg.norm(x)

    for qid, row in _ranking(run_file).items():
        text, image, _, instruction = query_rows[qid]
        with_instruction = unit(model.encode([_inputs(text, image)], instruction=instruction)[0])
        without = unit(model.encode([_inputs(text, image)])[0])
        cosines = {d: float(with_instruction @ unit(doc_vectors[d])) for d in pool_rows}
        for did, score in row:
            assert abs(score - cosines[did]) < 2e-6, (qid, did)
        # the instruction matters: without it the scores are others
        assert max(abs(score - float(without @ unit(doc_vectors[did]))) for did, score in row) > 1e-3


def _eval_run(tmp_path, runs, qrels, *extra):
    out_json = tmp_path / "eval.json"
    assert main(["eval", "--run", *map(str, runs), "--qrels", *map(str, qrels), "--out", str(out_json), *extra]) == 0
    return json.loads(out_json.read_text())


# (dataset id, name by the sample's TSV, name by UniIR's DATASET_IDS): the sample reuses UniIR's ids 1, 2, 3
IDS = [("1", "toy_t2i", "Fashion200K"), ("2", "toy_i2t", "WebQA"), ("3", "toy_it2i", "EDIS")]


@pytest.mark.parametrize("named_by", ["tsv", "uniir"])
def test_eval_of_a_run_equals_ranx_per_dataset(run_file, paths, tmp_path, capsys, named_by):
    extra = ["--instruction-file", str(paths["tsv"])] if named_by == "tsv" else []
    table = _eval_run(tmp_path, [run_file], paths["qrels"], *extra)
    run = {}
    for qid, did, _rank, score in _trec_lines(run_file):
        run.setdefault(qid, {})[did] = score
    expected = {}
    for (prefix, tsv_name, uniir_name), qrels_file in zip(IDS, paths["qrels"], strict=True):
        name = tsv_name if named_by == "tsv" else uniir_name
        ks = (10, 20, 50) if name == "Fashion200K" else (1, 5, 10)  # UniIR's cutoffs follow the name
        qrels = {}
        for line in qrels_file.read_text().splitlines():
            qid, _, did, rel, _task = line.split()
            assert qid.startswith(f"{prefix}:")
            qrels.setdefault(qid, {})[did] = int(rel)
        theirs = ranx.evaluate(
            ranx.Qrels(qrels),
            ranx.Run({q: run[q] for q in qrels}),
            [f"hit_rate@{k}" for k in ks] + ["mrr@10", "ndcg@10"],
            make_comparable=True,
        )
        expected[name] = {f"recall@{k}": theirs[f"hit_rate@{k}"] for k in ks} | {
            m: theirs[m] for m in ("mrr@10", "ndcg@10")
        }
    assert list(table) == [*expected, "average", HEADLINE]
    for name, metrics in expected.items():
        assert table[name] == pytest.approx(metrics, abs=1e-6), name
    # the average is over pairs, not over queries (toy_t2i has two queries, the others one)
    shared = [m for m in metrics if all(m in e for e in expected.values())]
    assert table["average"] == pytest.approx({m: np.mean([e[m] for e in expected.values()]) for m in shared})
    papers = [e["recall@10"] if n == "Fashion200K" else e["recall@5"] for n, e in expected.items()]
    assert table[HEADLINE] == {"recall": pytest.approx(np.mean(papers), abs=1e-9)}
    # the case is not degenerate: some positives are below rank 1
    assert 0 < table["average"]["mrr@10"] < 1
    assert to_markdown(table) in capsys.readouterr().out


def test_search_text_style_options_reach_the_queries(
    saved_model, index_dir, sample, paths, model, doc_vectors, run_file, tmp_path
):
    raw = _search(saved_model, index_dir, sample, paths, tmp_path / "raw.trec", "--instruction-policy", "first",
                  "--no-uniir-format")  # fmt: skip
    first = {"1": "Find the image.", "2": "Caption this.", "3": "Apply the change."}
    queries = {q.id: q for q in load_queries(paths["queries"], sample)}
    for qid, row in _ranking(raw).items():
        # the query as written, with its dataset's first prompt; the pool as the index holds it
        vec = model.encode([_inputs(queries[qid].text, queries[qid].image)], instruction=first[qid.split(":")[0]])[0]
        np.testing.assert_allclose([s for _, s in row], [float(vec @ doc_vectors[d]) for d, _ in row], atol=2e-6)
    assert raw.read_text() != run_file.read_text()  # the default (UniIR's texts and prompt draw) embeds others


def test_search_writes_uniirs_columns_and_eval_scores_them_as_the_trec_run(
    saved_model, index_dir, sample, paths, run_file, query_rows, tmp_path
):
    uniir = _search(saved_model, index_dir, sample, paths, tmp_path / "run.txt", "--run-format", "uniir")
    lines = uniir.read_text().splitlines()
    # the TREC run's six columns, then the query's task id from its query file
    assert [line.rsplit(" ", 1)[0] for line in lines] == run_file.read_text().splitlines()
    assert {line.split()[0]: int(line.split()[6]) for line in lines} == {
        qid: TASKS[name] for qid, (_, _, name, _) in query_rows.items()
    }
    extra = ["--instruction-file", str(paths["tsv"])]
    assert _eval_run(tmp_path, [uniir], paths["qrels"], *extra) == _eval_run(
        tmp_path, [run_file], paths["qrels"], *extra
    )


def test_search_refuses_the_uniir_format_without_task_ids(saved_model, index_dir, mixed_pairs, tmp_path):
    # pair-format queries carry no task id, so there is no 7th column to write
    with pytest.raises(ValueError, match=rf"^{mixed_pairs}:1: the uniir run format needs M-BEIR queries"):
        main(["search", "--model", str(saved_model), "--index", str(index_dir), "--queries", str(mixed_pairs),
              "--out", str(tmp_path / "run.txt"), "--run-format", "uniir"])  # fmt: skip
    assert not (tmp_path / "run.txt").exists()


@pytest.mark.parametrize(("k", "skip_top"), [(2, 0), (2, 1), (3, 2), (30, 0)])
def test_mine_skips_the_top_non_positives_and_keeps_k(run_file, paths, tmp_path, k, skip_top):
    mined_file = tmp_path / "neg.jsonl"
    args = ["mine", "--run", str(run_file), "--qrels", *map(str, paths["qrels"]), "--out", str(mined_file)]
    assert main([*args, "--k", str(k), "--skip-top", str(skip_top)]) == 0
    mined = read_mined(mined_file)
    positives = {}
    for qrels_file in paths["qrels"]:
        for line in qrels_file.read_text().splitlines():
            qid, _, did, rel, _task = line.split()
            if int(rel) > 0:
                positives.setdefault(qid, set()).add(did)
    ranking = _ranking(run_file)
    assert sorted(mined) == sorted(ranking)
    for qid, row in ranking.items():
        non_positives = [d for d, _ in row if d not in positives[qid]]
        assert len(non_positives) == len(row) - len(positives[qid])  # the positives are in the run
        # the skipped ones are exactly the top non-positives; then the next k, in rank order
        assert mined[qid] == non_positives[skip_top : skip_top + k], qid
        assert not set(mined[qid]) & positives[qid]


def test_end_to_end_eval_with_modality_probe(saved_model, mbeir_root, tmp_path):
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(saved_model), "--mbeir-root", str(mbeir_root), "--split", "test",
                 "--pool", "local", "--ablate", "image", "--out", str(out)]) == 0  # fmt: skip
    result = json.loads((out / "eval.json").read_text())
    assert list(result["metrics"]) == ["toy_t2i", "toy_i2t", "toy_it2i", "average", HEADLINE]
    # only toy_it2i has image+text queries, so only it is probed
    assert list(result["probe"]["tasks"]) == ["toy_it2i", "average"]
    row = result["probe"]["tasks"]["toy_it2i"]
    assert np.isclose(row["change"], row["recall@1 ablated"] - row["recall@1"])
    # the runs are UniIR's 7 columns, and jfe eval --run on them prints the very table end to end printed
    runs = sorted((out / "runs").iterdir())
    assert [p.name for p in runs] == ["toy_i2t.trec", "toy_it2i.trec", "toy_t2i.trec"]
    for path in runs:
        name = path.name.removesuffix(".trec")
        assert {int(line.split()[6]) for line in path.read_text().splitlines()} == {TASKS[name]}
    qrels = [mbeir_root / f"qrels/test/mbeir_{name}_test_qrels.txt" for name in TASKS]
    tsv = ["--instruction-file", str(mbeir_root / "instructions/query_instructions.tsv")]
    assert _eval_run(tmp_path, runs, qrels, *tsv) == result["metrics"]
    assert (out / "eval.md").read_text() == to_markdown(result["metrics"]) + "\n"
    # pool embeddings are cached as shards, keyed by the model's weights and the text format: a rerun
    # reuses them, a retrained model saved at the same path (or raw texts) does not
    from jfe.retrieval.evaluate import model_fingerprint

    cache = out / "pool_embeddings" / model_fingerprint(saved_model)
    assert (cache / "uniir-format" / "toy_t2i" / "shard-00000-of-00001" / "meta.json").is_file()
    assert [p.name for p in (out / "pool_embeddings").iterdir()] == [cache.name]


def test_eval_refuses_run_ids_absent_from_qrels(mbeir_root, tmp_path):
    run = tmp_path / "run.trec"
    run.write_text("9:9 Q0 1:10 1 0.5 jfe\n")
    qrels = mbeir_root / "qrels/test/mbeir_toy_t2i_test_qrels.txt"
    with pytest.raises(ValueError, match="9:9"):
        from jfe.retrieval.metrics import evaluate
        from jfe.retrieval.trec import read_qrels

        evaluate(read_run(run), read_qrels(qrels))
