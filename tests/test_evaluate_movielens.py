"""`streamrec evaluate` on MovieLens-100K: the bars the blend and the student must clear (takes
~5 minutes: encoding, teacher and student training on the first half, then the prequential
pass scored on the second half)."""

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_blend_beats_every_single_model_and_the_student_earns_its_place():
    out = subprocess.run([sys.executable, "-m", "streamrec.cli", "evaluate", "--dataset",
                          "movielens-100k", "--json"], capture_output=True, text=True, check=True,
                         timeout=1200)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["events"] > 100_000 and result["clicks"] > 25_000
    assert result["training_window"]["interactions"] == 50_000
    models = result["models"]
    assert {"popularity", "baseline_tags", "baseline_cooccurrence", "covisitation", "isgd",
            "river_biasedmf", "content", "tags", "blend",
            "blend_no_content", "teacher", "student", "student_int8",
            "blend_no_student"} <= models.keys()
    for m in models.values():
        assert {"hr_at_10", "mrr_at_10", "ndcg_at_10", "cold_hr_at_10", "new_item_hr_at_10",
                "coverage", "events_per_s"} <= m.keys()
    blend = models["blend"]["hr_at_10"]
    assert blend >= 1.8 * models["popularity"]["hr_at_10"]
    # Simple baselines, tuned, beat many published recommenders: the blend clears them by 10%.
    assert blend >= 1.1 * max(models[b]["hr_at_10"] for b in
                              ("popularity", "baseline_tags", "baseline_cooccurrence"))
    for name, m in models.items():
        if not name.startswith("blend"):
            assert blend > m["hr_at_10"], name
    # The content source must not cost the blend overall quality.
    assert blend >= models["blend_no_content"]["hr_at_10"]
    # The student keeps 90% of the teacher, and earns its place in the blend.
    assert models["student"]["hr_at_10"] >= 0.9 * models["teacher"]["hr_at_10"]
    assert blend > models["blend_no_student"]["hr_at_10"]
