import json

import pytest

from tests.conftest import make_image


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
