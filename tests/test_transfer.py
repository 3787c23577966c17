"""The knowledge-transfer test: held-out multiple choice sees past a learned prior; the CLI end to end."""

import pandas as pd
import pytest
import yaml

from analyses.transfer import per_question
from unilens.cli import main


def _choices(rows):
    out = []
    for image, value, logps in rows:
        for cand, lp in zip(("sunny", "cloudy", "raining"), logps, strict=True):
            out.append(
                {"image": image, "attribute": "weather", "turn": 0, "value": value, "candidate": cand, "logp": lp}
            )
    return pd.DataFrame(out)


def test_held_out_choice_ignores_the_prior_on_the_seen_value():
    # the model always puts "sunny" first (the only weather its understanding data showed) ...
    choices = _choices(
        [
            ("a", "cloudy", (-0.1, -2.0, -3.0)),  # ... but ranks the right unseen value above the other one
            ("b", "raining", (-0.1, -3.0, -2.0)),
            ("c", "cloudy", (-0.1, -3.0, -2.0)),  # ... except here
            ("d", "sunny", (-0.1, -2.0, -3.0)),  # a seen-value question: not part of the held-out score
        ]
    )
    vqa = pd.DataFrame(
        {
            "image": list("abcd"),
            "turn": 0,
            "attribute": "weather",
            "value": ["cloudy", "raining", "cloudy", "sunny"],
            "exact": [0.0, 0.0, 0.0, 1.0],
        }
    )
    q = per_question(vqa, choices, "weather", ["cloudy", "raining"]).set_index("image")
    assert list(q.index) == ["a", "b", "c"]
    assert q["held_out_choice"].tolist() == [1.0, 1.0, 0.0]
    assert q["greedy"].tolist() == [0.0, 0.0, 0.0]


def test_transfer_cli_reports_scores_and_paired_differences(trained_runs, tmp_path):
    from models.evaluate import EvalConfig, run_eval

    run = trained_runs["sem-sem"].out
    run_eval(run, f"{run}/eval", EvalConfig(captions=False, generation=False, n_boot=50), None)

    def twin(name: str, **labels) -> str:  # the same answers, labelled as another arm or preset
        folder = tmp_path / name
        (folder / "eval").mkdir(parents=True)
        for table_name in ("vqa.csv", "choices.csv"):
            pd.read_csv(f"{run}/eval/{table_name}").assign(**labels).to_csv(folder / "eval" / table_name, index=False)
        return str(folder)

    cfg = {
        "out": str(tmp_path / "report"),
        "attribute": "weather",
        "held_out": ["cloudy", "raining"],
        "models": {
            "mixed": run,
            "und-only": twin("und", mixture="und-only"),
            "mixed-early": twin("mixed-early", preset="lora-layers:0-1"),
            "und-only-early": twin("und-early", preset="lora-layers:0-1", mixture="und-only"),
        },
        "n_boot": 200,
    }
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["transfer", str(tmp_path / "t.yaml")]) == 0
    table = pd.read_csv(tmp_path / "report" / "transfer.csv")
    choice = table[(table["metric"] == "held_out_choice") & (table["mixture"] != "difference")]
    assert len(choice) == 4 and choice["mean"].between(0, 1).all()
    assert (choice["lo"] <= choice["mean"]).all() and (choice["mean"] <= choice["hi"]).all()
    assert choice["chance"].eq(0.5).all()
    diff = table[table["mixture"] == "difference"]
    assert len(diff) == 4 and (diff["mean"] == 0).all() and (diff["lo"] == 0).all() and (diff["hi"] == 0).all()
    assert sorted(diff["preset"].unique()) == ["lora", "lora-layers:0-1"]
    assert (tmp_path / "report" / "transfer_weather.png").is_file()
    assert (tmp_path / "report" / "transfer_by_preset_weather.png").is_file()
    bad = {**cfg, "held_out": ["cloudy"]}
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(bad))
    assert main(["transfer", str(tmp_path / "b.yaml")]) == 2


@pytest.mark.parametrize("held_out", [["foggy", "cloudy"]])
def test_unknown_held_out_values_are_named(trained_runs, tmp_path, held_out):
    from models.evaluate import EvalConfig, run_eval

    run = trained_runs["sem-sem"].out
    run_eval(run, f"{run}/eval", EvalConfig(captions=False, generation=False, n_boot=50), None)
    cfg = {"out": str(tmp_path / "r"), "held_out": held_out, "models": {"m": run}}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["transfer", str(tmp_path / "t.yaml")]) == 2
