import numpy as np
import pytest

from tests.conftest import write_mbeir_sample

SAMPLE_TASKS = {"toy_t2i": 0, "toy_i2t": 3, "toy_it2i": 7}  # dataset -> task id, as the sample's qrels say


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """The M-BEIR sample, plus one query file holding the queries of all three tasks."""
    root = write_mbeir_sample(tmp_path_factory.mktemp("cli") / "mbeir")
    lines = "".join((root / f"query/test/mbeir_{name}_test.jsonl").read_text() for name in SAMPLE_TASKS)
    (root / "all_queries.jsonl").write_text(lines)
    return root


def normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(n: int, dim: int, n_centres: int, seed: int, spread: float = 1.0) -> np.ndarray:
    """Unit vectors scattered around random centres: the structure IVF/HNSW are built for, unlike uniform noise.

    spread=1.0 makes the noise as long as the centre, so neighbours often sit in other IVF cells and the
    approximate indexes fall measurably short of exact search (spread 0.5 gives recall 1.0, which tests nothing).
    """
    rng = np.random.default_rng(seed)
    centres = normalise(rng.standard_normal((n_centres, dim)))
    points = centres[rng.integers(0, n_centres, n)] + spread / np.sqrt(dim) * rng.standard_normal((n, dim))
    return normalise(points)


def exact_topk(db: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = queries @ db.T
    # partition first: a full argsort of (Q, N) dominates the runtime of the recall tests
    part = (
        np.argpartition(-sims, k - 1, axis=1)[:, :k]
        if k < sims.shape[1]
        else np.tile(np.arange(sims.shape[1]), (len(sims), 1))
    )
    order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1, kind="stable")
    top = np.take_along_axis(part, order, axis=1)
    return np.take_along_axis(sims, top, axis=1), top


@pytest.fixture(scope="session")
def corpus() -> tuple[np.ndarray, list[str], np.ndarray]:
    """20k clustered unit vectors (dim 32, 200 centres), their ids, and 500 held-out queries from the same clusters."""
    data = clustered(20_500, 32, 200, seed=1)
    return data[:20_000], [f"9:{i}" for i in range(20_000)], data[20_000:]
