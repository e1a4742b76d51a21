"""`streamrec evaluate` on MovieLens-100K: the bar the blend must clear (takes ~3 minutes)."""

import json
import subprocess
import sys


def test_blend_beats_every_single_model_and_popularity_by_1_8x():
    out = subprocess.run([sys.executable, "-m", "streamrec.cli", "evaluate", "--dataset",
                          "movielens-100k", "--json"], capture_output=True, text=True, check=True,
                         timeout=1200)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["events"] > 100_000 and result["clicks"] > 50_000
    models = result["models"]
    assert {"popularity", "covisitation", "isgd", "river_biasedmf", "content", "blend",
            "blend_no_content"} <= models.keys()
    for m in models.values():
        assert {"hr_at_10", "mrr_at_10", "ndcg_at_10", "cold_hr_at_10", "coverage",
                "events_per_s"} <= m.keys()
    blend = models["blend"]["hr_at_10"]
    assert blend >= 1.8 * models["popularity"]["hr_at_10"]
    for name, m in models.items():
        if name not in ("blend", "blend_no_content"):
            assert blend > m["hr_at_10"], name
    # The content source must not cost the blend overall quality.
    assert blend >= models["blend_no_content"]["hr_at_10"]
