"""`jfe demo` with few training steps: each stage really trained, and the table it prints and writes
is what the models it left score (against jfe's evaluator and against ranx on its runs)."""

import contextlib
import io
import re

import pytest
import ranx
import torch

from jfe import Embedder, backbones
from jfe.artifacts import DemoResults, TrainSummary
from jfe.cli import main
from jfe.demo import SCHEDULES
from jfe.train.config import TrainConfig

TASKS = ["digits_t2i", "digits_i2t", "digits_i2i", "digits_it2t", "digits_it2i"]
FUSION = ["digits_it2t", "digits_it2i"]
STAGE1_STEPS, STAGE2_STEPS = 5, 4  # different, so a stage that ran the other's count is caught


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Run the demo once into a fresh cache; returns (out folder, cache folder, what it printed)."""
    tmp = tmp_path_factory.mktemp("demo")
    out, cache = tmp / "demo", tmp / "cache"
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.setenv("JFE_CACHE", str(cache))
        args = ["demo", "--out", str(out), "--stage1-steps", str(STAGE1_STEPS), "--stage2-steps", str(STAGE2_STEPS)]
        assert main(args) == 0
    return out, cache, printed.getvalue()


@pytest.fixture(scope="module")
def base_model(demo):
    """The untrained tiny checkpoint the demo built into its cache."""
    _, cache, _ = demo
    (folder,) = cache.glob("tiny-qwen2_vl-*")
    return folder


def _weights(folder) -> dict[str, torch.Tensor]:
    return Embedder.from_pretrained(folder, dtype="float32", device="cpu").model.state_dict()


def _qrels(data, task):
    qrels = {}
    for line in (data / f"qrels/test/mbeir_{task}_test_qrels.txt").read_text().splitlines():
        qid, _, did, rel, _task = line.split()
        qrels.setdefault(qid, {})[did] = int(rel)
    return qrels


@pytest.mark.slow
def test_each_stage_ran_its_requested_steps(demo):
    out, _, _ = demo
    assert TrainSummary.read(out / "stage1" / "final").global_steps == STAGE1_STEPS
    assert TrainSummary.read(out / "stage2" / "final").global_steps == STAGE2_STEPS
    # stage 2 started from stage 1's output, and the exported model is stage 2's
    assert TrainSummary.read(out / "stage2" / "final").base_model == str(out / "stage1" / "final")
    assert TrainSummary.read(out / "model").global_steps == STAGE2_STEPS


@pytest.mark.slow
def test_stage1_changed_the_untrained_weights(demo, base_model):
    out, _, _ = demo
    before, after = _weights(base_model), _weights(out / "stage1" / "final")
    assert before.keys() == after.keys()
    # tiny-stage1 trains everything, the vision tower included
    projections = [k for k in before if re.search(r"(_proj|qkv|fc1|fc2)\.weight$", k)]
    assert {k.split(".")[0] for k in projections} == {"visual", "language_model"}
    unchanged = [k for k in projections if torch.equal(before[k], after[k])]
    assert not unchanged


@pytest.mark.slow
def test_stage2_changed_exactly_the_lora_targets_of_stage1(demo):
    out, _, _ = demo
    stage1, exported = _weights(out / "stage1" / "final"), _weights(out / "model")
    preset = TrainConfig.from_dict(TrainSummary.read(out / "stage2" / "final").config).lora_target
    target = backbones.backbone_for(out / "stage1" / "final").lora_target(preset)
    modules = {k.rsplit(".", 1)[0] for k in stage1}
    expected = {f"{m}.weight" for m in modules if re.fullmatch(target, m) and f"{m}.weight" in stage1}
    assert any(k.startswith("visual.") for k in expected) and any(k.startswith("language_model.") for k in expected)
    changed = {k for k in stage1 if not torch.equal(stage1[k], exported[k])}
    # LoRA merged into its target modules; every other weight is stage 1's, bit for bit
    assert changed == expected


@pytest.mark.slow
def test_results_are_what_the_left_models_score(demo):
    from jfe.retrieval.evaluate import evaluate_mbeir as evaluate
    from jfe.retrieval.items import TextStyle

    def evaluate_mbeir(*args, **kwargs):
        # the demo scores the digits as its recipes train them: the first prompt, texts as written
        return evaluate(*args, style=TextStyle("first", uniir_format=False), **kwargs)

    out, cache, _ = demo
    results = DemoResults.read(out)
    data = cache / "digits-mbeir"
    assert (data / ".complete").is_file()
    assert list(results.stages) == ["untrained", "stage1", "stage2"]
    assert all(set(table) == set(TASKS) for table in results.stages.values())
    # stage 2, from the exported model, scored anew (pool embedded in memory, not the demo's shards)
    exported = Embedder.from_pretrained(out / "model", dtype="float32", device="cpu")
    fresh = evaluate_mbeir(exported, data, split="test", pool="local", datasets=TASKS)
    for task in TASKS:
        row = results.stages["stage2"][task]
        assert row == pytest.approx({"hit@1": fresh[task]["recall@1"], "hit@5": fresh[task]["recall@5"]}, abs=5e-5)
    stage1 = Embedder.from_pretrained(out / "stage1" / "final", dtype="float32", device="cpu")
    fresh1 = evaluate_mbeir(stage1, data, split="test", pool="local", datasets=["digits_it2i"])["digits_it2i"]
    assert results.stages["stage1"]["digits_it2i"]["hit@1"] == pytest.approx(fresh1["recall@1"], abs=5e-5)
    # the probe: stage 2 with the image removed from the composed queries
    ablated = evaluate_mbeir(exported, data, split="test", pool="local", datasets=FUSION, ablate_modality="image")
    assert set(results.ablation["image_removed"]) == set(results.ablation["text_removed"]) == set(FUSION)
    for task in FUSION:
        assert results.ablation["image_removed"][task]["hit@1"] == pytest.approx(ablated[task]["recall@1"], abs=5e-5)
    assert results.seconds > 0


@pytest.mark.slow
def test_stage2_hits_equal_ranx_on_the_runs_left(demo):
    out, cache, _ = demo
    results = DemoResults.read(out)
    for task in TASKS:
        run = {}
        for line in (out / "runs" / f"{task}.trec").read_text().splitlines():
            qid, _, did, _rank, score, _ = line.split()
            run.setdefault(qid, {})[did] = float(score)
        qrels = _qrels(cache / "digits-mbeir", task)
        theirs = ranx.evaluate(ranx.Qrels(qrels), ranx.Run(run), ["hit_rate@1", "hit_rate@5"], make_comparable=True)
        expected = {"hit@1": theirs["hit_rate@1"], "hit@5": theirs["hit_rate@5"]}
        assert results.stages["stage2"][task] == pytest.approx(expected, abs=5e-5), task


@pytest.mark.slow
def test_printed_table_is_results_json(demo):
    out, _, printed = demo
    results = DemoResults.read(out)
    # the table says which schedule it measured: steps overridden make a "custom" one
    quick = SCHEDULES["quick"].describe()
    assert results.schedule == quick | {"name": "custom", "stage1_steps": STAGE1_STEPS, "stage2_steps": STAGE2_STEPS}
    assert f"results: custom schedule ({STAGE1_STEPS} + {STAGE2_STEPS} steps;" in printed
    rows = {}
    for line in printed.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] in TASKS:
            rows[cells[0]] = cells[1:]
    assert list(rows) == list(results.stages["stage2"])
    for task, cells in rows.items():
        expected = []
        for stage in ("untrained", "stage1", "stage2"):
            expected += [f"{results.stages[stage][task][m]:.3f}" for m in ("hit@1", "hit@5")]
        for key in ("image_removed", "text_removed"):
            row = results.ablation[key].get(task)
            expected.append(f"{row['hit@1']:.3f}" if row else "")
        assert cells == expected, task
    # the exported model (with its card) and the search runs are left for the user
    assert (out / "model" / "README.md").is_file() and (out / "model" / "modules.json").is_file()
    assert {p.stem for p in (out / "runs").glob("*.trec")} == set(TASKS)


def test_unknown_command_fails_with_usage(capsys):
    with pytest.raises(SystemExit) as err:
        main(["frobnicate"])
    assert err.value.code == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err
