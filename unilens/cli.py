"""The `unilens` command: one subcommand per job. User mistakes print one `error:` line and exit with code 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from unilens.errors import UnilensError


def _data_make(args: argparse.Namespace) -> None:
    from tasks.dataset import DataConfig, make_dataset
    from unilens.config import load_config

    cfg = load_config(DataConfig, args.config, section="data" if args.section else None)
    if args.seed is not None:
        cfg.seed = args.seed
    out = make_dataset(cfg, args.out, overwrite=args.overwrite, progress=not args.quiet)
    print(f"dataset written to {out} (manifest.json, contact_sheet.png)")


def _data_show(args: argparse.Namespace) -> None:
    import json

    from tasks.records import load_dataset

    ds = load_dataset(args.folder)
    m = ds.manifest
    print(json.dumps({"seed": m["seed"], "counts": m["counts"], "content_hash": m["content_hash"]}, indent=2))


def _encoders_train(args: argparse.Namespace) -> None:
    from models.encoders.train import EncoderTrainConfig, print_report, train_semantic, train_vq
    from unilens.config import load_config

    cfg = load_config(EncoderTrainConfig, args.config)
    if args.dataset:
        cfg.dataset = args.dataset
    run = train_semantic if args.kind == "semantic" else train_vq
    print_report(run(cfg, args.out, progress=not args.quiet))
    print(f"{args.kind} encoder saved to {args.out}")


def _encoders_probe(args: argparse.Namespace) -> None:
    import pandas as pd

    from analyses.encoder_inputs import run_encoder_probes
    from probes.encoder import ALL_POOLS

    pools = tuple(args.pools.split(","))
    unknown = [p for p in pools if p not in ALL_POOLS]
    if unknown:
        raise UnilensError(f"--pools: unknown pooling(s) {unknown}; choose among {', '.join(ALL_POOLS)}")
    table = run_encoder_probes(
        {f: f for f in args.encoders}, args.dataset, args.out, args.cache, log=lambda *_: None, pools=pools
    )
    view = table.assign(score=table.apply(lambda r: f"{r.score:.3f} [{r.low:.3f}, {r.high:.3f}]", axis=1))
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(view.pivot_table(index=["encoder", "pool"], columns="attribute", values="score", aggfunc="first"))
    majority = table[table.metric == "accuracy"].groupby("attribute").majority.first()
    print("majority baseline: " + ", ".join(f"{a} {m:.2f}" for a, m in majority.items()) + "; minute is R^2")
    stopped = table[~table.converged]
    if len(stopped):
        names = ", ".join(f"{r.encoder}/{r.pool}/{r.attribute}" for r in stopped.itertuples())
        print(f"solver hit its iteration cap (scores are lower bounds): {names}")
    print(f"written to {args.out}/encoder_probes.csv and encoder_probes.png")


def _lm_pretrain(args: argparse.Namespace) -> None:
    from models.encoders.train import print_report
    from models.lm import LMConfig, pretrain_lm
    from unilens.config import load_config

    cfg = load_config(LMConfig, args.config)
    if args.dataset:
        cfg.dataset = args.dataset
    print_report(pretrain_lm(cfg, args.out, progress=not args.quiet))
    print(f"LLM and tokenizer saved to {args.out}")


def _embedded_build(args: argparse.Namespace) -> None:
    from models.embedded import EmbeddedConfig, build_embedded
    from unilens.config import load_config

    cfg = load_config(EmbeddedConfig, args.config)
    if args.root:
        cfg.root = args.root
    paths = build_embedded(cfg, progress=not args.quiet)
    print("embedded default ready: " + ", ".join(f"{k}={v}" for k, v in paths.items()))


def _train(args: argparse.Namespace) -> None:
    from models.encoders.train import print_report
    from models.train import TrainConfig, train
    from unilens.config import load_config

    cfg = load_config(TrainConfig, args.config)
    if args.out:
        cfg.out = args.out
    print_report(train(cfg, progress=not args.quiet, until_step=args.max_steps))


def _reader_train(args: argparse.Namespace) -> None:
    from models.encoders.train import print_report
    from models.reader import ReaderConfig, train_reader
    from tasks.records import load_dataset
    from unilens.config import load_config

    cfg = load_config(ReaderConfig, args.config) if args.config else ReaderConfig()
    dataset = load_dataset(args.dataset)
    cfg.image_size = dataset.image_size
    print_report(train_reader(cfg, dataset, args.out, progress=not args.quiet))


def _reader_ceiling(args: argparse.Namespace) -> None:
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from models.encoders.vq import load_vq
    from models.reader import load_reader, reconstruct, tokenizer_ceiling, train_reader
    from tasks.records import load_dataset
    from tasks.scoring import summarize
    from unilens.io import atomic_write_text

    dataset = load_dataset(args.dataset)
    vq = load_vq(args.vq)
    if vq.image_size != dataset.image_size:
        raise UnilensError(
            f"the tokenizer at {args.vq} takes {vq.image_size} px images, the dataset's are {dataset.image_size} px: "
            "give a dataset rendered at the tokenizer's size"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    reader = load_reader(args.reader)
    retrained = None
    if args.retrain:
        train_reader(reader.cfg, dataset, out / "retrained_reader", not args.quiet, lambda x: reconstruct(vq, x))
        retrained = load_reader(out / "retrained_reader")
    rows, recon = tokenizer_ceiling(reader, vq, dataset, retrained)
    columns = [c for c in ("truth", "reconstruction", "retrained") if c in rows]
    table = summarize(rows, ["attribute"], columns).assign(tokenizer=str(args.vq))
    atomic_write_text(out / "ceiling_rows.csv", rows.to_csv(index=False))
    atomic_write_text(out / "ceiling.csv", table.to_csv(index=False))
    ids = list(rows["image"].unique()[:8])
    top = np.concatenate([dataset.images[i] for i in ids], 1)
    Image.fromarray(np.concatenate([top, np.concatenate(list(recon[: len(ids)]), 1)], 0)).save(
        out / "reconstructions.png"
    )
    print(table.drop(columns="tokenizer").to_string(index=False, float_format="%.3f"))


def _eval(args: argparse.Namespace) -> None:
    from analyses.plots import plot_eval_curves
    from models.evaluate import EvalConfig, run_eval

    cfg = EvalConfig(
        limit=args.limit,
        split=args.split,
        understanding=not args.no_understanding,
        captions=not args.no_captions,
        generation=not args.no_generation,
        fid_weights=args.fid_weights or "",
        guidance=args.guidance,
        dataset=args.dataset or "",
    )
    summary = run_eval(args.target, args.out, cfg, args.reader, which=args.checkpoints)
    if len(summary):
        plot_eval_curves(summary, summary.attrs["folder"] / "scores.png")


def _config_with_out(cls, args: argparse.Namespace):
    """An analysis config from `args.config`, its output folder overridden by `--out` when given."""
    from unilens.config import load_config

    cfg = load_config(cls, args.config)
    if args.out:
        cfg.out = args.out
    return cfg


def _print_table(table) -> None:
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def _probe(args: argparse.Namespace) -> None:
    from analyses.probe_layers import ProbeConfig, run_probes

    cfg = _config_with_out(ProbeConfig, args)
    run_probes(cfg)
    print(f"probe results in {cfg.out} (probes.csv, cross_context.csv, figures)")


def _attend(args: argparse.Namespace) -> None:
    from pathlib import Path

    from analyses.attention_layers import run_attention

    models = {}
    for item in args.models:
        name, _, path = item.partition("=") if "=" in item else (Path(item).name, "", item)
        models[name] = path
    tables = run_attention(
        models,
        args.out,
        args.question,
        args.region,
        args.split,
        args.limit,
        log=lambda *_: None,
        ablate=args.ablate,
        scoring=args.scoring,
    )
    summary = tables["attention"]
    top = summary.sort_values("region_lift", ascending=False).groupby("model", sort=False).head(3)
    for r in top.itertuples():
        print(
            f"{r.model}: block {r.layer} head {r.head}: {r.to_region:.3f} [{r.to_region_lo:.3f}, {r.to_region_hi:.3f}] "
            f"of the answer's attention on the item ({r.region_lift:.1f}x an even spread; image {r.to_image:.3f})"
        )
    if args.ablate:
        for r in tables["ablation"].itertuples():
            print(
                f"{r.model}: {r.condition} ({r.scoring} scoring): answer right {r.correct:.3f}, "
                f"{r.correct_minus_none:+.3f} [{r.correct_minus_none_lo:+.3f}, {r.correct_minus_none_hi:+.3f}] "
                f"against nothing zeroed; log-prob of the truth {r.logp_true_minus_none:+.3f} "
                f"[{r.logp_true_minus_none_lo:+.3f}, {r.logp_true_minus_none_hi:+.3f}]"
            )
    print(f"written to {args.out}/attention.csv, attention_rows.csv and the figure")


def _patch(args: argparse.Namespace) -> None:
    from analyses.patch_layers import PatchConfig, run_patching

    cfg = _config_with_out(PatchConfig, args)
    if args.n_pairs:
        cfg.n_pairs = args.n_pairs
    run_patching(cfg)
    print(f"patching results in {cfg.out} (patching.csv, patching_summary.csv, figures)")


def _transfer(args: argparse.Namespace) -> None:
    from analyses.transfer import TransferConfig, run_transfer

    cfg = _config_with_out(TransferConfig, args)
    table = run_transfer(cfg)
    _print_table(table)
    print(f"transfer results in {cfg.out} (transfer.csv, transfer_questions.csv, figure)")


def _compare(args: argparse.Namespace) -> None:
    from analyses.compare import run_compare

    table = run_compare(args.a, args.b, args.out, args.label_a, args.label_b, n_boot=args.n_boot, seed=args.seed)
    diff = table[(table["arm"] == "A - B") & (table["metric"] != "soft")]  # the figure's rows
    cols = ["task", "attribute", "metric", "mean", "lo", "hi", "n_questions"]
    print(diff[cols].to_string(index=False, float_format="%.3f"))
    print(f"A = {args.label_a}, B = {args.label_b}; every arm's rows in {args.out}/compare.csv, figure compare.png")


def _attribute(args: argparse.Namespace) -> None:
    from analyses.attribute_layers import AttributeConfig, run_attributions

    cfg = _config_with_out(AttributeConfig, args)
    summary = run_attributions(cfg)
    _print_table(summary)
    print(f"attributions in {cfg.out} (layer_attributions*.csv, ig_convergence.csv, figures)")


def _mixing(args: argparse.Namespace) -> None:
    from analyses.mixing import MixingConfig, run_mixing

    cfg = _config_with_out(MixingConfig, args)
    table = run_mixing(cfg)
    _print_table(table)
    print(f"mixing results in {cfg.out} (mixing.csv, mixing_scores.csv, figures)")


def _report(args: argparse.Namespace) -> None:
    from analyses.report import write_report

    path = write_report(args.folders, args.out, args.title)
    print(f"report written to {path}")


def _battery(args: argparse.Namespace) -> None:
    from analyses.battery import load_battery, parse_shard, run_battery, status_table

    cfg = load_battery(args.config)
    if args.out:
        cfg.out = args.out
    if args.battery_command == "run":
        table = run_battery(cfg, shard=parse_shard(args.shard) if args.shard else None)
    else:
        table = status_table(cfg)
    print(table.to_string(index=False))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unilens",
        description="Does knowledge learned from image generation reach understanding in a unified VLM, and where?",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    data = sub.add_parser("data", help="make and inspect synthetic smartwatch datasets")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    make = data_sub.add_parser("make", help="render a dataset folder from a data config")
    make.add_argument("config", help="YAML data config (see configs/data/)")
    make.add_argument("--out", required=True, help="dataset folder to create")
    make.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    make.add_argument("--seed", type=int, default=None, help="override the config's seed")
    make.add_argument("--section", action="store_true", help="read the config's 'data:' section")
    make.add_argument("--quiet", action="store_true", help="no progress bar")
    make.set_defaults(func=_data_make)
    show = data_sub.add_parser("show", help="print a dataset's counts and content hash")
    show.add_argument("folder")
    show.set_defaults(func=_data_show)

    enc = sub.add_parser("encoders", help="train the embedded vision encoders (semantic ViT, VQ-VAE)")
    enc_sub = enc.add_subparsers(dest="enc_command", metavar="ACTION", required=True)
    enc_train = enc_sub.add_parser("train", help="train one encoder on a dataset's training images")
    enc_train.add_argument("kind", choices=["semantic", "vq"])
    enc_train.add_argument("config", help="YAML encoder config (see configs/encoders.yaml)")
    enc_train.add_argument("--out", required=True, help="folder to save the encoder to")
    enc_train.add_argument("--dataset", help="override the config's dataset folder")
    enc_train.add_argument("--quiet", action="store_true")
    enc_train.set_defaults(func=_encoders_train)

    enc_probe = enc_sub.add_parser(
        "probe", help="linear probes on what an encoder gives the model: does its space carry each attribute?"
    )
    enc_probe.add_argument("encoders", nargs="+", help="encoder folders (semantic, SigLIP or VQ)")
    enc_probe.add_argument("--dataset", required=True, help="world dataset: fit on its training, score on test images")
    enc_probe.add_argument(
        "--out", required=True, help="folder for encoder_probes.csv (encoder x pooling x attribute) and its figure"
    )
    enc_probe.add_argument("--cache", default="runs/cache", help="feature cache folder (shared with training)")
    enc_probe.add_argument(
        "--pools",
        default="mean,tokens",
        help="comma-separated poolings: mean, tokens, weather_region, battery_region (the tokens that draw the item)",
    )
    enc_probe.set_defaults(func=_encoders_probe)

    lm = sub.add_parser("lm", help="the embedded LLM: tokenizer and text-only pre-training")
    lm_sub = lm.add_subparsers(dest="lm_command", metavar="ACTION", required=True)
    pre = lm_sub.add_parser("pretrain", help="train a tokenizer and pre-train a small Llama on the world's text")
    pre.add_argument("config", help="YAML LM config (see configs/lm.yaml)")
    pre.add_argument("--out", required=True)
    pre.add_argument("--dataset", help="override the config's dataset folder")
    pre.add_argument("--quiet", action="store_true")
    pre.set_defaults(func=_lm_pretrain)

    emb = sub.add_parser("embedded", help="build every embedded-default artefact (data, encoders, LLM) in one go")
    emb_sub = emb.add_subparsers(dest="emb_command", metavar="ACTION", required=True)
    emb_build = emb_sub.add_parser("build", help="build what is missing under the embedded root")
    emb_build.add_argument("config", help="YAML embedded config (see configs/embedded.yaml)")
    emb_build.add_argument("--root", help="override the config's root folder")
    emb_build.add_argument("--quiet", action="store_true")
    emb_build.set_defaults(func=_embedded_build)

    tr = sub.add_parser("train", help="train a unified model (variant x arm x freezing preset); resumes if killed")
    tr.add_argument("config", help="YAML training config (see configs/train/)")
    tr.add_argument("--out", help="override the config's run folder")
    tr.add_argument("--max-steps", type=int, default=None, help="stop after this step; a later call resumes")
    tr.add_argument("--quiet", action="store_true")
    tr.set_defaults(func=_train)

    rd = sub.add_parser("reader", help="the attribute reader that scores generated images")
    rd_sub = rd.add_subparsers(dest="reader_command", metavar="ACTION", required=True)
    rd_train = rd_sub.add_parser("train", help="train the reader on a dataset's ground-truth images")
    rd_train.add_argument("dataset")
    rd_train.add_argument("--out", required=True)
    rd_train.add_argument("--config", help="optional YAML reader config")
    rd_train.add_argument("--quiet", action="store_true")
    rd_train.set_defaults(func=_reader_train)
    rd_ceil = rd_sub.add_parser(
        "ceiling", help="what a VQ tokenizer keeps: each attribute read from the test images and their reconstructions"
    )
    rd_ceil.add_argument("vq", help="a VQ encoder folder (unilens encoders train vq)")
    rd_ceil.add_argument("dataset", help="a world dataset folder: its test images are read")
    rd_ceil.add_argument("--reader", required=True, help="attribute reader folder (unilens reader train)")
    rd_ceil.add_argument("--out", required=True, help="folder for ceiling.csv, ceiling_rows.csv and a contact sheet")
    rd_ceil.add_argument(
        "--retrain",
        action="store_true",
        help="also train a reader (same config) on reconstructions of the training images: blurred or lost?",
    )
    rd_ceil.add_argument("--quiet", action="store_true")
    rd_ceil.set_defaults(func=_reader_ceiling)

    ev = sub.add_parser("eval", help="score understanding and generation of a checkpoint or run: tidy CSVs + grid")
    ev.add_argument("target", help="a checkpoint folder or a run folder")
    ev.add_argument(
        "--checkpoints",
        default="last",
        help="last | all | fractions:0.5,1 | comma-separated steps, last allowed among them (run folders)",
    )
    ev.add_argument("--reader", help="attribute reader folder (scores VQ generations)")
    ev.add_argument("--out", help="output folder (default: RUN/eval)")
    ev.add_argument("--limit", type=int, default=0, help="only the first N test images")
    ev.add_argument(
        "--split", choices=["test", "train"], default="test", help="train: score training images (memorisation)"
    )
    ev.add_argument("--no-understanding", action="store_true", help="skip VQA and captions (generation-only runs)")
    ev.add_argument("--no-captions", action="store_true")
    ev.add_argument("--no-generation", action="store_true")
    ev.add_argument(
        "--guidance",
        type=float,
        default=1.0,
        help="classifier-free guidance scale for generation (1: none; the model needs gen_prompt_dropout)",
    )
    ev.add_argument("--fid-weights", default=None, help="local TorchScript Inception file: adds FID (VQ generations)")
    ev.add_argument(
        "--dataset",
        default=None,
        help="score this dataset folder's questions instead of the training dataset's (it must hold the same images)",
    )
    ev.set_defaults(func=_eval)

    pr = sub.add_parser("probe", help="layer-wise and cross-context linear probes over trained models: CSV + plots")
    pr.add_argument("config", help="YAML probe config (see configs/probe/)")
    pr.add_argument("--out", help="override the config's output folder")
    pr.set_defaults(func=_probe)

    at_ = sub.add_parser(
        "attend", help="attention from the answer's position to a drawn item's image tokens, per block and head"
    )
    at_.add_argument("models", nargs="+", help="run or checkpoint folders, each optionally NAME=PATH")
    at_.add_argument("--out", required=True, help="folder for attention.csv, attention_rows.csv and the figure")
    at_.add_argument(
        "--question", default="weather", help="the question whose answer position queries (default weather)"
    )
    at_.add_argument(
        "--region", default="weather_region", choices=["weather_region", "battery_region"], help="the item's tokens"
    )
    at_.add_argument("--split", default="test", choices=["test", "train"], help="which records (default test)")
    at_.add_argument("--limit", type=int, default=0, help="the first N records that ask the question (0: all)")
    at_.add_argument(
        "--ablate",
        type=int,
        default=0,
        help="zero the K heads that look most at the item (each, and together) and K that look least, where the "
        "answer is read out, and score the answer: ablation.csv",
    )
    at_.add_argument(
        "--scoring",
        default="auto",
        choices=["auto", "first_token", "answer"],
        help="how --ablate scores: first_token (heads zeroed at the answer's position, values by first token), "
        "answer (each value as a whole answer, heads zeroed wherever it is predicted: for values that share a "
        "first token, e.g. the corners); auto: first_token where the values' first tokens differ",
    )
    at_.set_defaults(func=_attend)

    pa = sub.add_parser(
        "patch", help="activation patching on counterfactual image pairs, layer x position group: CSV + plots"
    )
    pa.add_argument("config", help="YAML patch config (see configs/patch/)")
    pa.add_argument("--out", default=None, help="output folder (overrides the config)")
    pa.add_argument("--n-pairs", type=int, default=0, help="pairs per attribute (overrides the config)")
    pa.set_defaults(func=_patch)

    tr = sub.add_parser("transfer", help="knowledge-transfer test on held-out values: mixed vs und-only, per preset")
    tr.add_argument("config", help="YAML transfer config (see configs/transfer/)")
    tr.add_argument("--out", default=None, help="output folder (overrides the config)")
    tr.set_defaults(func=_transfer)

    at = sub.add_parser(
        "attribute", help="layer integrated gradients per LLM block and position group, IG heatmaps: CSV + plots"
    )
    at.add_argument("config", help="YAML attribute config (models: {name: run folder}, attributes, out)")
    at.add_argument("--out", default=None, help="output folder (overrides the config)")
    at.set_defaults(func=_attribute)

    mx = sub.add_parser(
        "mixing", help="findings 1 and 2: mixed vs single-task training per variant, distortion and data seen"
    )
    mx.add_argument("config", help="YAML mixing config (models: {name: run folder}, out: folder)")
    mx.add_argument("--out", default=None, help="output folder (overrides the config)")
    mx.set_defaults(func=_mixing)

    cp = sub.add_parser(
        "compare",
        help="two arms of eval folders (e.g. seeds of two recipes), A - B per question with a CI over images and runs",
    )
    cp.add_argument("--a", nargs="+", required=True, metavar="EVAL", help="arm A's eval folders (one per run)")
    cp.add_argument("--b", nargs="+", required=True, metavar="EVAL", help="arm B's eval folders (one per run)")
    cp.add_argument("--out", required=True, help="folder for compare.csv and compare.png")
    cp.add_argument("--label-a", default="A")
    cp.add_argument("--label-b", default="B")
    cp.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates (1000 as in unilens eval)")
    cp.add_argument("--seed", type=int, default=0)
    cp.set_defaults(func=_compare)

    rp = sub.add_parser(
        "report", help="one self-contained HTML page over result folders (eval, probe, patch, transfer)"
    )
    rp.add_argument("folders", nargs="+", help="run folders (with eval/) and result folders of probe/patch/transfer")
    rp.add_argument("--out", required=True, help="HTML file to write")
    rp.add_argument("--title", default="unilens report")
    rp.set_defaults(func=_report)

    ba = sub.add_parser("battery", help="an experiment grid: train, evaluate, probe, patch, transfer, report")
    ba_sub = ba.add_subparsers(dest="battery_command", metavar="ACTION", required=True)
    for action, text in (
        ("run", "run (or resume) every cell, then the analyses and the report"),
        ("status", "show which cells are done, running, pending or failed"),
    ):
        b = ba_sub.add_parser(action, help=text)
        b.add_argument("config", help="YAML battery config (see configs/battery/)")
        b.add_argument("--out", default=None, help="battery folder (overrides the config)")
        if action == "run":
            b.add_argument(
                "--shard",
                default=None,
                metavar="I/N",
                help="train only cells I, I+N, ... (one worker per GPU: CUDA_VISIBLE_DEVICES=I); no analyses",
            )
        b.set_defaults(func=_battery)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    except UnilensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
