"""Findings 1-2 analysis: mixed minus single-task gains, images paired, on hand-made eval tables."""

import pandas as pd
import pytest
import yaml

from analyses.mixing import alignment_lines, answer_lines
from unilens.cli import main

VALUES = ["top-left", "top-right", "bottom-left", "bottom-right"]


def _run(root, name, mixture, und_right, gen_right, distortion=0.0, n_images=40, variant="sem-sem", epochs=3.0):
    """A fake evaluated run: the first `und_right` fraction of questions chosen right, likewise generations."""
    folder = root / name
    (folder / "eval").mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"model": {"input_distortion": distortion}, "epochs": epochs}))
    tags = {"step": 10, "fraction": 1.0, "variant": variant, "preset": "lora", "mixture": mixture, "seed": 0}
    choices, gen = [], []
    for i in range(n_images):
        image, truth = f"img_{i:03d}", VALUES[i % 4]
        right = i < und_right * n_images
        for cand in VALUES:
            best = truth if right else VALUES[(i + 1) % 4]
            choices.append(
                {
                    "image": image,
                    "attribute": "weather_pos",
                    "turn": 0,
                    "value": truth,
                    "candidate": cand,
                    "logp": 0.0 if cand == best else -3.0,
                    **tags,
                }
            )
        gen.append(
            {
                "image": image,
                "attribute": "weather_pos",
                "value": truth,
                "correct": float(i < gen_right * n_images),
                "cosine": 0.5,
                **tags,
            }
        )
    if not mixture.startswith("gen-only"):
        pd.DataFrame(choices).to_csv(folder / "eval" / "choices.csv", index=False)
    if not mixture.startswith("und-only"):
        pd.DataFrame(gen).to_csv(folder / "eval" / "generation.csv", index=False)
    return str(folder)


def test_mixing_gains_pair_images_and_track_distortion(tmp_path):
    models = {
        "mixed": _run(tmp_path, "m", "mixed", und_right=0.9, gen_right=0.8),
        "und-only": _run(tmp_path, "u", "und-only", und_right=0.4, gen_right=0.0),
        "gen-only": _run(tmp_path, "g", "gen-only", und_right=0.0, gen_right=0.8),
        "und-only-steps": _run(tmp_path, "us", "und-only:step-matched", und_right=0.6, gen_right=0.0),
        "mixed-d": _run(tmp_path, "md", "mixed", und_right=0.5, gen_right=0.5, distortion=1.0),
        "und-only-d": _run(tmp_path, "ud", "und-only", und_right=0.5, gen_right=0.0, distortion=1.0),
    }
    cfg = {"models": models, "out": str(tmp_path / "out"), "attributes": ["weather_pos"], "n_boot": 300}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["mixing", str(tmp_path / "m.yaml")]) == 0
    gain = pd.read_csv(tmp_path / "out" / "mixing.csv")
    control = gain[gain["versus"] == "und-only:step-matched"]
    assert len(control) == 1 and control["gain"].iloc[0] == pytest.approx(0.3)
    gain = gain[gain["versus"] != "und-only:step-matched"].set_index(["input_distortion", "task"])
    und = gain.loc[(0.0, "understanding")]
    assert und["gain"] == pytest.approx(0.5) and und["lo"] > 0.2 and und["versus"] == "und-only"
    assert gain.loc[(0.0, "generation"), "gain"] == pytest.approx(0.0)
    assert gain.loc[(1.0, "understanding"), "gain"] == pytest.approx(0.0)
    assert (1.0, "generation") not in gain.index  # no generation-only arm at that distortion
    scores = pd.read_csv(tmp_path / "out" / "mixing_scores.csv")
    assert len(scores) == 2 + 1 + 1 + 1 + 2 + 1  # mixed: und + gen; und-only, step-matched: und; gen-only: gen; ...
    for name in ("mixing_curves.png", "mixing_distortion.png"):
        assert (tmp_path / "out" / name).is_file()
    assert main(["report", str(tmp_path / "out"), "--out", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "mixed - und-only +0.500" in page and "helps" in page
    # generation: mixed and generation-only both read back 0.8 of 4 positions, far above chance: no guess flag
    assert "compares guesses" not in page
    contrasts = pd.read_csv(tmp_path / "out" / "alignment.csv")
    assert len(contrasts) == 1 and contrasts["contrast"].iloc[0] == "undistorted - distorted"
    assert contrasts["difference"].iloc[0] == pytest.approx(0.5) and contrasts["lo"].iloc[0] > 0.2
    assert "gain undistorted - distorted (sem-sem, distortion in 1 / out 0) +0.500" in page


def test_alignment_contrasts_aligned_with_misaligned_variants(tmp_path):
    """Gains 0.5 and 0.3 for the aligned variants, 0.0 and 0.2 for the misaligned ones: aligned - misaligned is
    0.4 - 0.1 = +0.3, images paired across variants."""
    models = {}
    for variant, mixed_right in {"sem-sem": 0.9, "vq-vq": 0.7, "sem-vq": 0.4, "vq-sem": 0.6}.items():
        models[f"{variant}-m"] = _run(tmp_path, f"{variant}-m", "mixed", mixed_right, 0.5, variant=variant)
        models[f"{variant}-u"] = _run(tmp_path, f"{variant}-u", "und-only", 0.4, 0.0, variant=variant)
    cfg = {"models": models, "out": str(tmp_path / "out"), "attributes": ["weather_pos"], "n_boot": 300}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["mixing", str(tmp_path / "m.yaml")]) == 0
    contrasts = pd.read_csv(tmp_path / "out" / "alignment.csv")
    assert list(contrasts["contrast"]) == ["aligned - misaligned"]  # understanding only: no generation-only arm
    row = contrasts.iloc[0]
    assert row["difference"] == pytest.approx(0.3) and row["lo"] > 0 and row["n_images"] == 40
    # among 4 values (chance 0.25): sem-sem's mixed arm (0.9) is above chance; sem-vq's arms (0.4 of 40 images
    # each, CI reaching 0.25) are not
    gain = pd.read_csv(tmp_path / "out" / "mixing.csv")
    table = pd.read_csv(tmp_path / "out" / "mixing_scores.csv")
    flagged = {line.split(" ")[0] for line in answer_lines(gain, table) if "compares guesses" in line}
    assert flagged == {"sem-vq"}
    low = table.assign(mean=0.25, lo=0.1, hi=0.4)  # every arm at chance
    assert all("compares guesses" in line for line in answer_lines(gain, low))
    assert "compares guesses" not in alignment_lines(contrasts, table)[0]
    assert "compares guesses" in alignment_lines(contrasts, low)[0]


def test_mixing_names_missing_tables_and_unknown_attributes(tmp_path):
    from analyses.mixing import MixingConfig, run_mixing
    from unilens.errors import UnilensError

    (tmp_path / "empty").mkdir()
    with pytest.raises(UnilensError, match="unilens eval"):
        run_mixing(MixingConfig(models={"x": str(tmp_path / "empty")}, out=str(tmp_path / "o")))
    with pytest.raises(UnilensError, match="not scored by choice"):
        run_mixing(MixingConfig(models={"x": "y"}, attributes=["time"], out=str(tmp_path / "o")))


def test_mixing_refuses_to_pool_runs_of_different_recipes(tmp_path):
    from analyses.mixing import MixingConfig, run_mixing
    from unilens.errors import UnilensError

    models = {
        "mixed": _run(tmp_path, "m", "mixed", 0.9, 0.8, epochs=1.5),
        "und-only": _run(tmp_path, "u", "und-only", 0.4, 0.0, epochs=3.0),
    }
    with pytest.raises(UnilensError, match=r"different recipes.*epochs=1.5"):
        run_mixing(MixingConfig(models=models, out=str(tmp_path / "out")))


def test_recipe_names_later_fields_only_off_their_defaults():
    from analyses.mixing import recipe

    base = {"dataset": "d", "epochs": 3.0, "lr_llm": 0.003, "model": {"variant": "sem-sem"}}
    plain = recipe(base)
    assert plain == recipe({**base, "model": {"variant": "sem-sem", "image_positions": False}})
    grid = recipe({**base, "model": {"variant": "sem-sem", "image_positions": "grid"}})
    assert grid != plain and grid.endswith("image_positions=grid")
    transposed = recipe({**base, "model": {"variant": "sem-sem", "image_order": "transposed"}})
    assert transposed == plain + ", image_order=transposed"
    assert recipe({**base, "lr_schedule": "constant"}) == plain + ", lr_schedule=constant"
    assert recipe({**base, "lr_schedule": "cosine"}) == plain
