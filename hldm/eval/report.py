"""`python -m hldm eval --checkpoint DIR --out reports/ [--quick] [--evaluator DIR] [--compare NAME=DIR ...]`.

Writes reports/<name>/report.md (+ PNG figures and metrics.json): the evaluator's
own held-out accuracy, one metrics table (paper figures marked as theirs,
real-vs-real floor, H-LDM, label-conditional baseline and the four Table-III
ablations, "not trained" where no checkpoint is given), the sampler/step sweep,
the counterfactual test, the augmentation experiment and the listener (heart rate,
murmur phase and level, realism; hldm.eval.listener_report). Every clip is made by
HLDMPipeline (hldm.eval.harness). `python -m hldm eval train-evaluator ...` trains
the evaluator (hldm.eval.evaluator_cli).
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hldm.eval import counterfactual as CF
from hldm.eval import edit_report as ER
from hldm.eval import figures
from hldm.eval import harness as H
from hldm.eval import listener_report as LR

# The paper's own numbers (CirCor, their harness and encoder): printed beside ours, never compared as equals.
PAPER = {"FAD": 9.7, "IS": 4.1, "MSD": 1.52, "SC": 0.86, "CF": 0.89, "AD": 0.92, "PDS": 0.92}
COLUMNS = ("FAD", "IS", "MSD", "SC", "SNR", "CF", "AD", "PDS", "SNPA", "CMMD")
LOWER_IS_BETTER = {"FAD", "MSD", "CMMD"}
# Comparison rows of the table, keyed by the ablation flags a checkpoint's config carries.
EXPECTED_ROWS = {
    ("labels_only", "no_disentangle", "no_medical_attention", "no_structured_noise"):
        "label-conditional LDM baseline",
    ("no_medical_attention",): "- Medical Attention",
    ("labels_only",): "- Hierarchical conditioning (one-hot labels, no text/graph)",
    ("no_disentangle",): "- Disentanglement",
    ("no_structured_noise",): "- Structured noise",
}
# DDIM-6 is the shipped student's own setting (stage "distill"); on a teacher it is a plain 6-step DDIM.
SWEEP = (("ddpm", 1000), ("ddim", 50), ("dpmpp", 20), ("dpmpp", 10), ("unipc", 6), ("ddim", 6))
NOT_VGGISH = ("FAD, IS and CF use this in-domain evaluator, not VGGish: VGGish was trained on 16 kHz "
              "everyday sound (AudioSet), never hears 4 kHz heart sounds and downloads its weights, so "
              "its embedding would measure the wrong things; our numbers are comparable only within "
              "this harness, not with the paper's.")


@dataclass
class Settings:
    """Sizes of every part of the run; `quick` shrinks them to minutes on CPU."""

    seconds: float = 4.0
    n_real: int = 256  # held-out real clips (both halves)
    n_eval_sim: int = 128  # simulator clips with grades IV-VI for the evaluator's accuracy
    cf_bases: int = 8
    cf_seeds: int = 4
    cf_real: int = 6
    ad_series: int = 4  # counterfactual series per comparison checkpoint (AD)
    aug_seeds: int = 5
    aug_steps: int = 800
    aug_train: int = 2000
    aug_per_class: int = 32
    grid_conditions: int = 17
    evaluator_steps: int = 2000  # only when no trained evaluator is found
    sweep_ddpm: bool = True
    listener_seconds: float = 8.0  # heart rate and phase want several beats at 40 bpm
    listener_seeds: int = 3
    edit_per_pitch: int = 4  # held-out murmur recordings per pitch for the 'Your recording' edits
    edit_normals: int = 4  # held-out murmur-free ones a murmur is added to
    seed: int = 0

    @classmethod
    def quick(cls) -> "Settings":
        return cls(n_real=32, n_eval_sim=32, cf_bases=2, cf_seeds=2, cf_real=1, ad_series=1, aug_seeds=2,
                   aug_steps=60, aug_train=96, aug_per_class=4, grid_conditions=8, evaluator_steps=150,
                   sweep_ddpm=False, listener_seconds=4.0, listener_seeds=1, edit_per_pitch=1, edit_normals=1)


def floor_name(source: str) -> str:
    """The table's first own row: two patient-disjoint halves of the reference set."""
    if source == "circor":
        return "real vs real floor (two disjoint halves of held-out patients)"
    return "reference floor: SIMULATOR vs simulator (no real data)"


def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if not np.isfinite(v):
        return "n/a"
    return f"{v:.{digits}g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- pieces


def get_evaluator(path: Path | None, settings: Settings, out: Path, log):
    """The trained evaluator at `path` (or checkpoints/evaluator); else one trained now, saved in `out`."""
    from hldm.eval.evaluator_cli import load_evaluator, save_evaluator, training_data
    from hldm.eval.evaluator_training import train_evaluator
    from hldm.models.evaluator import EvaluatorConfig
    from hldm.paths import REPO

    for candidate in ([path] if path else [REPO / "checkpoints" / "evaluator"]):
        if candidate and (candidate / "model.safetensors").is_file():
            info = json.loads((candidate / "config.json").read_text())
            shown = candidate.relative_to(REPO) if candidate.is_relative_to(REPO) else candidate
            return load_evaluator(candidate), (f"`{shown}`: trained {info.get('steps', '?')} steps on "
                                               f"{info.get('trained_on', '?')} (held-out scores on its model card)")
    if path:
        raise FileNotFoundError(f"--evaluator {path}: no evaluator checkpoint there (model.safetensors)")
    log(f"no trained evaluator found; training one for {settings.evaluator_steps} steps")
    data, desc = training_data(settings.seconds, n_sim=max(256, 8 * settings.n_real),
                               max_real=16 * settings.evaluator_steps, seed=settings.seed)
    cfg = EvaluatorConfig(channels=(32, 64, 64), emb_dim=64) if settings.evaluator_steps < 500 else None
    model = train_evaluator(data.audio, data.findings, steps=settings.evaluator_steps, seed=settings.seed,
                            cfg=cfg, progress=False)
    save_evaluator(out / "evaluator", model, {"trained_on": desc, "steps": settings.evaluator_steps})
    return model, f"trained for this report ({settings.evaluator_steps} steps on {desc}); saved in evaluator/"


def evaluator_accuracy(evaluator, real: H.ClipSet, settings: Settings) -> dict:
    from hldm.data.simulator import sample_findings
    from hldm.eval.evaluator_training import attribute_accuracy

    rng = np.random.default_rng(settings.seed + 7)
    loud = []
    while len(loud) < settings.n_eval_sim:
        f = sample_findings(rng)
        if f.murmur == "present" and f.grade >= 4:
            loud.append(f)
    sim = H.simulated_clips(len(loud), settings.seconds, seed=settings.seed + 7, findings=loud)
    return {"real": attribute_accuracy(evaluator, real.audio, real.findings),
            "sim_grade_4_6": attribute_accuracy(evaluator, sim.audio, sim.findings),
            "n_real": len(real), "n_sim": len(sim)}


def model_row(pipe, evaluator, ref: H.ClipSet, ref_read: H.Reading, requests: H.ClipSet, settings: Settings,
              sampler=None, steps=None, ad_series: int = 0, gen: H.ClipSet | None = None) -> dict:
    """Generate one clip per request (same findings as the real half) unless `gen` holds them, then every
    metric."""
    if gen is None:
        gen = H.generate_clips(pipe, requests.findings, "generated", seed=settings.seed, seconds=settings.seconds,
                               sampler=sampler, steps=steps)
    row = H.quality_row(ref, ref_read, gen, H.read(evaluator, gen), list(zip(requests.audio, gen.audio)))
    row["PDS"] = H.latent_disentanglement(gen)["mean"]
    from hldm.eval.metrics import structured_noise_accuracy

    row["SNPA"] = structured_noise_accuracy(gen.weights, np.array([f.murmur == "present" for f in gen.findings]))
    row["seconds_per_clip"] = gen.seconds_per_clip
    if ad_series:
        bases = cf_bases(requests.findings, ad_series)
        result = CF.run([(b, CF.pipeline_renderer(pipe, b, settings.seed, settings.seconds)) for b in bases], evaluator)
        row["AD"] = result.summary["AD"]
    return row


def cf_bases(findings, n: int):
    """Counterfactual bases: held-out murmur findings first, then the knowledge graph's textbook cases."""
    from hldm.clinical.knowledge_graph import default_graph

    kg = default_graph()
    own = [CF.murmur_base(H.playable(f)) for f in findings if f.murmur == "present"]
    textbook = [CF.murmur_base(kg.typical_findings(c)) for c in
                ("mitral regurgitation", "aortic stenosis", "ventricular septal defect", "pulmonary stenosis",
                 "hypertrophic obstructive cardiomyopathy", "innocent murmur", "aortic regurgitation",
                 "mitral valve prolapse")]
    out = []
    for f in own[: n // 2] + textbook + own[n // 2:]:
        if f not in out:
            out.append(f)
    return out[:n]


def counterfactual_section(pipe, evaluator, real: H.ClipSet, settings: Settings) -> dict:
    bases = cf_bases(real.findings, settings.cf_bases)
    gen = CF.run([(b, CF.pipeline_renderer(pipe, b, settings.seed + s, settings.seconds))
                  for b in bases for s in range(settings.cf_seeds)], evaluator)
    sim = CF.run([(b, CF.simulator_renderer(settings.seed + s, settings.seconds))
                  for b in bases for s in range(settings.cf_seeds)], evaluator)
    idx = [i for i, f in enumerate(real.findings) if f.murmur == "present"] or list(range(len(real)))
    real_renderers = [(CF.murmur_base(H.playable(real.findings[i])),
                       CF.edit_renderer(pipe, real.audio[i], CF.murmur_base(H.playable(real.findings[i])),
                                        settings.seed)) for i in idx[:settings.cf_real]]
    edited = CF.run(real_renderers, evaluator)
    return {"generated": gen, "real_edit": edited, "simulator": sim, "n_bases": len(bases),
            "n_seeds": settings.cf_seeds, "real_source": real.source}


# ----------------------------------------------------------------------------- report text


def render_markdown(ctx: dict) -> str:
    s: Settings = ctx["settings"]
    out = [f"# H-LDM evaluation report: {ctx['name']}", ""]
    if ctx["real_source"] != "circor":
        out += ["> **WARNING: NO REAL DATA.** CirCor was not found (../shared/data or $HLDM_CIRCOR), so every",
                "> \"real\" clip below is a SIMULATOR clip (hldm.data.simulator) standing in for held-out",
                "> patients. These numbers say nothing about fidelity to real heart sounds.", ""]
    out += [f"- checkpoint: `{ctx['checkpoint']}` ({ctx['ablations']})",
            f"- mode: {'quick' if ctx['quick'] else 'full'}; {s.seconds:g} s clips; held-out real clips: "
            f"{ctx['n_real']} from {ctx['n_patients']} patients ({ctx['real_source']}), halves "
            f"{ctx['n_a']} / {ctx['n_b']}",
            f"- evaluator: {ctx['evaluator_desc']}",
            f"- device: {ctx['device']}; generated {ctx['date']}; wall time {ctx['wall_min']:.1f} min", ""]
    # 1. evaluator
    acc = ctx["evaluator_accuracy"]
    reference = "real (CirCor test split)" if ctx["real_source"] == "circor" else "SIMULATOR reference"
    heads = sorted(set(acc["real"]) | set(acc["sim_grade_4_6"]))
    out += ["## 1. The evaluator (our FAD/IS/CF listener)", "", NOT_VGGISH, "",
            _table(["attribute", f"held-out {reference} accuracy (n={acc['n_real']})",
                    f"simulator grades IV-VI (n={acc['n_sim']})"],
                   [[h, acc["real"].get(h), acc["sim_grade_4_6"].get(h)] for h in heads]),
            "", "Attributes missing from a column have no labels there (CirCor gives no diagnosis: the "
            "condition head learns from simulator clips only).", ""]
    # 2. metrics table
    rows = [["paper H-LDM (THEIRS: their harness, VGGish-style encoder)"] + [PAPER.get(c) for c in COLUMNS]]
    for name, row in ctx["rows"].items():
        rows.append([name] + (["not trained"] * len(COLUMNS) if row is None else [row.get(c) for c in COLUMNS]))
    out += ["## 2. Metrics (ours unless marked THEIRS)", "",
            f"Reference set: {'real' if ctx['real_source'] == 'circor' else 'SIMULATOR (no real data)'} half A. "
            "Each model generates one clip per clip of half B, with B's findings; the floor row is half B "
            "itself. "
            + ", ".join(f"{c} lower is better" for c in sorted(LOWER_IS_BETTER)) + "; the rest higher. "
            "AD from one-attribute what-if edits; PDS over latent subspaces vs requested factors; SNPA = "
            "AUC of w_murmur for murmur present vs absent. CMMD is an unbiased MMD^2 (x1000): it can dip "
            "below 0 when two sets match.", "",
            _table(["model"] + list(COLUMNS), rows), "", "![metric bars](metric_bars.png)", ""]
    sweep = ctx["sweep"]
    out += ["### Sampler / step sweep (H-LDM)", "",
            _table(["sampler", "steps", "FAD", "CF", "s / clip"],
                   [[k.split("-")[0], k.split("-")[1]] + (["skipped (quick)"] * 3 if v is None else
                                                          [v["FAD"], v["CF"], v["seconds_per_clip"]])
                    for k, v in sweep.items()]), ""]
    main = ctx["rows"].get("H-LDM (ours)") or {}
    if main.get("CF_by_attribute"):
        out += ["CF by attribute (H-LDM): " + ", ".join(f"{k} {_fmt(v)}" for k, v in main["CF_by_attribute"].items()),
                ""]
    # 3. counterfactual
    cf = ctx["counterfactual"]
    edited = "recordings" if cf["real_source"] == "circor" else "SIMULATOR clips (no real data)"
    out += ["## 3. Counterfactual (what-if)", "",
            f"{cf['n_bases']} base findings x {cf['n_seeds']} seeds; per base: the grade swept over its Levine "
            "range, one timing edit (same phase), one location edit, each as the app's what-if: the same initial noise, "
            "with the latent subspaces the edit may not move held to the base's (`held_subspaces`). "
            "Murmur-band energy = power in the murmur's pitch band over 20-800 Hz (dB); onsets from an "
            "envelope detector on the audio; heart rate from the envelope's autocorrelation. The encoded "
            f"real rows edit held-out {edited} with pipe.edit (SDEdit, strength 0.5); "
            "the simulator rows are the known answer.", ""]
    table = []
    for label, key in (("generated", "generated"), ("encoded real + edit", "real_edit"), ("simulator", "simulator")):
        sm = cf[key].summary
        table.append([label, sm["grade"]["spearman_mean"], sm["grade"]["monotonic_share"],
                      sm["grade"]["onset_shift_ms"], sm["grade"]["hr_change_bpm"],
                      sm["grade"].get("evaluator_reads_target"),
                      sm["timing"]["onset_shift_ms"], sm["timing"].get("evaluator_reads_target"),
                      sm["location"]["onset_shift_ms"], sm["location"].get("evaluator_reads_target"),
                      sm.get("AD")])
    out += [_table(["clips", "grade: Spearman rho (band energy)", "strictly monotonic share",
                    "grade: S1/S2 shift ms", "grade: HR change bpm", "grade read as asked",
                    "timing: S1/S2 shift ms", "timing read as asked", "location: S1/S2 shift ms",
                    "location read as asked", "AD"], table), "",
            _table(["grade"] + [str(g) for g in range(1, 7)],
                   [[label] + [cf[key].summary["grade"]["band_db_by_grade"].get(g) for g in range(1, 7)]
                    for label, key in (("generated (dB)", "generated"), ("encoded real (dB)", "real_edit"),
                                       ("simulator (dB)", "simulator"))]),
            "", "![grade sweep](grade_sweep.png)", ""]
    # 4. augmentation
    aug = ctx["augmentation"]
    out += ["## 4. Augmentation (paper: +11.3 %)", "",
            f"Evaluator trained {aug['steps']} steps per arm and seed on {aug['n_train']} "
            f"{'real training-split' if aug['source'] == 'circor' else 'SIMULATOR (no real data)'} "
            f"clips, with vs without {aug['n_synthetic']} H-LDM clips of the rare classes; "
            f"tested on {aug['n_test']} held-out clips; mean +/- 95 % CI over seeds {aug['seeds']}. CirCor has "
            "no diagnosis labels, so the classifier studied is the evaluator's timing and grade heads.", ""]
    arows = []
    for head, r in aug["heads"].items():
        for arm in ("baseline", "augmented"):
            (mo, co), (mr, cr) = r[arm]["overall"]["mean_ci"], r[arm]["rare"]["mean_ci"]
            arows.append([head, ", ".join(r["rare_classes"]), str(r["n_test_rare"]), arm,
                          f"{_fmt(mo)} +/- {_fmt(co)}", f"{_fmt(mr)} +/- {_fmt(cr)}"])
    out += [_table(["head", "rare classes", "rare test clips", "training set", "overall accuracy",
                    "rare-class accuracy"], arows), ""]
    out += listener_markdown(ctx["listener"], s.seconds)
    out += ER.markdown(ctx["edits"])
    out += ["## Figures", "", "Generated clip per condition (textbook findings from the knowledge graph):", "",
            "![spectrograms per condition](conditions.png)", ""]
    return "\n".join(out) + "\n"


def _verdict(passed) -> str:
    return "-" if passed is None else "pass" if passed else "FAIL"


def listener_markdown(sec: dict, clip_seconds: float) -> list[str]:
    """Lines of the listener section (numbers from hldm.eval.listener_report.run)."""
    ref = "real (held-out patients)" if sec["reference"] == "circor" else "SIMULATOR (no real data)"
    r = sec["realism"]
    out = ["## 5. Listener (no learned model)", "",
           "A clinician's questions answered from the audio alone (hldm.eval.listener): beats from the "
           "autocorrelation of the 25-150 Hz envelope, S1/S2 from its peaks (two a period; S1 opens the shorter "
           "interval at normal rates and is the lower-pitched sound at fast ones), murmur-band power in systole "
           "vs diastole away from the heart sounds, murmur level in dB re S1/S2. The simulator's figures are the "
           f"known answer. {sec['seconds']:g} s clips, {sec['seeds']} seed(s) each.", "",
           "### Realism: a classifier two-sample test", "",
           "Logistic regression on band-energy statistics (8 bands over 20-2000 Hz: level mean, spread and "
           "percentiles, spread over the cardiac cycle; heart rate, beat irregularity, periodicity), "
           f"out-of-fold ROC AUC with folds by patient, {clip_seconds:g} s clips; 0.5: indistinguishable. "
           f"Reference: {ref}.", "",
           _table(["comparison", "AUC", "clips"],
                  [[f"{ref} half A vs generated (half B's findings)", r["auc_generated"],
                    f"{r['n_real']} vs {r['n_generated']}"],
                   [f"floor: {ref} half A vs half B", r["auc_floor"], "-"],
                   [f"{ref} half A vs half B through Griffin-Lim alone", r["auc_griffin_lim"], "-"],
                   [f"{ref} half A vs half B through the VAE and back", r["auc_vae_round_trip"], "-"]]), "",
           "The last two rows say where a generated clip's \"not a recording\" comes from: the inversion "
           "alone, or the VAE's reconstruction (which no sampler can do better than).", "",
           "### Murmur phase per condition (typical findings)", "",
           f"log10 of the pitch band's power in systole over diastole; pass: systolic >= +{LR.PHASE_PASS}, "
           f"diastolic <= -{LR.PHASE_PASS} (twice the power in its phase); continuous: the power just before "
           f"and just after S2 both >= twice the late-diastolic floor (spans S2 >= {LR.PHASE_PASS}).", ""]
    alone = sec.get("model_alone")
    if alone:
        out += ["\"generated\" clips are the app's: the sampler's clip edited to its findings' heart rate, "
                "murmur phase and level (hldm.conformance); \"model alone\" rows and columns are the sampler's "
                "clips before that edit (same seeds).", ""]

    def reading(r: dict) -> list:
        return [r["ratio"], r["spans_s2"], _verdict(r["pass"])]

    rows = [[c, p["timing"] or "no murmur", p["pitch"] or "-", *reading(p["generated"]),
             *(reading(alone["phase"][c]["generated"]) if alone else []), *reading(p["simulator"])]
            for c, p in sec["phase"].items()]
    head = ["generated: sys/dia", "spans S2", "pass"] + (["model alone: sys/dia", "spans S2", "pass"] if alone else [])
    out += [_table(["condition (typical findings)", "timing", "pitch", *head, "simulator: sys/dia", "spans S2", "pass"],
                   rows), ""]
    hr = sec["heart_rate"]
    lo, hi = LR.HR_TARGET_RANGE
    errors = ("median_abs_error_bpm", "median_abs_error_50_150_bpm")
    rows = [[age] + a["measured"] + [a[k] for k in errors] for age, a in hr["by_age"].items()]
    if alone:
        rows += [[f"{age}, model alone"] + a["measured"] + [a[k] for k in errors]
                 for age, a in alone["heart_rate"]["by_age"].items()]
    rows.append(["simulator (known answer)"] + ["-"] * len(hr["rates"]) + [hr["simulator"][k] for k in errors])
    out += ["### Heart rate asked vs measured (no murmur)", "",
            _table(["age group"] + [f"{r} bpm" for r in hr["rates"]] + ["median abs error", f"same, {lo}-{hi} bpm"],
                   rows), "",
            "### What-if grade sweep I..VI (holosystolic murmur, dB re S1/S2)", "",
            "Each grade as the app's what-if from the grade II clip (same seed); the level is read on the base "
            "clip's segmentation, as the edit holds the rhythm; S1/S2 onset shift and heart-rate change vs the "
            "base clip.", ""]
    rows = [[name, pitch] + [v["level_db_by_grade"].get(g) for g in range(1, 7)]
            + [v[k] for k in ("swing_db", "spearman", "onset_shift_ms", "hr_change_bpm")]
            for name, by_pitch in [*sec["grade"].items(), *([("generated, model alone", alone["grade"]["generated"])]
                                                           if alone else [])]
            for pitch, v in by_pitch.items()]
    out += [_table(["what-if clips", "pitch"] + [f"grade {g}" for g in range(1, 7)]
                   + ["I->VI dB", "Spearman", "S1/S2 shift ms", "HR change bpm"], rows), ""]
    return out


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    if isinstance(x, CF.CounterfactualResult):
        return x.summary
    if isinstance(x, Settings):
        return asdict(x)
    return x


# ----------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hldm eval", description=__doc__.splitlines()[0],
                                epilog="Train the evaluator first: python -m hldm eval train-evaluator "
                                       "--out checkpoints/evaluator")
    p.add_argument("--checkpoint", type=Path, required=True, help="H-LDM model directory")
    p.add_argument("--out", type=Path, default=Path("reports"), help="reports root; writes <out>/<name>/")
    p.add_argument("--name", default=None, help="report name (default: the checkpoint directory's name)")
    p.add_argument("--quick", action="store_true", help="small sets, few seeds, no DDPM-1000: minutes on CPU")
    p.add_argument("--evaluator", type=Path, default=None,
                   help="evaluator dir (default checkpoints/evaluator; trained on the fly if missing)")
    p.add_argument("--compare", nargs="+", action="extend", default=[], metavar="NAME=DIR",
                   help="other checkpoints for the table (baseline, ablations); placed by their ablation flags")
    p.add_argument("--ddpm", action="store_true", help="keep DDPM-1000 in the sampler sweep in --quick mode")
    p.add_argument("--n-clips", type=int, default=None, help="held-out real clips (overrides the mode's)")
    p.add_argument("--seconds", type=float, default=None, help="clip length (default 4)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--seed", type=int, default=0)
    return p


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The run's Settings from the parsed command line; ValueError names a bad value."""
    settings = Settings.quick() if args.quick else Settings()
    settings.seed = args.seed
    settings.sweep_ddpm = settings.sweep_ddpm or args.ddpm
    if args.n_clips is not None:
        if args.n_clips < 8:
            raise ValueError(f"--n-clips must be >= 8 (two halves of >= 4 for FAD), got {args.n_clips}")
        settings.n_real = args.n_clips
    if args.seconds is not None:
        if not 1.0 <= args.seconds <= 30.0:
            raise ValueError(f"--seconds must be within 1..30, got {args.seconds}")
        settings.seconds = args.seconds
    return settings


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "train-evaluator":
        from hldm.eval.evaluator_cli import main as train_main

        return train_main(argv[1:])
    if argv and argv[0] == "sweep":
        from hldm.eval.sampler_sweep import main as sweep_main

        return sweep_main(argv[1:])
    args = build_parser().parse_args(argv)
    compare = {}
    for item in args.compare:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            print(f"error: --compare expects NAME=DIR, got {item!r}", file=sys.stderr)
            return 2
        compare[name] = Path(path)
    try:
        settings = settings_from_args(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from hldm.models.checkpoint import CheckpointError
    from hldm.pipeline import HLDMPipeline

    try:
        pipe = HLDMPipeline.from_pretrained(args.checkpoint, device=args.device)
        others = {n: HLDMPipeline.from_pretrained(p, device=args.device) for n, p in compare.items()}
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    name = args.name or args.checkpoint.resolve().name
    out = args.out / name
    out.mkdir(parents=True, exist_ok=True)
    report = run_report(pipe, others, out, settings, args.evaluator, quick=args.quick, name=name,
                        checkpoint=str(args.checkpoint))
    print(f"wrote {report}")
    return 0


def run_report(pipe, others: dict, out: Path, settings: Settings, evaluator_path: Path | None = None,
               quick: bool = False, name: str = "report", checkpoint: str = "?", log=print) -> Path:
    """Every section, in order; writes report.md, metrics.json and the figures into `out`."""
    start = time.perf_counter()

    def say(msg: str) -> None:
        log(f"[{time.perf_counter() - start:6.0f} s] {msg}")

    out.mkdir(parents=True, exist_ok=True)
    say("held-out real clips ...")
    real = H.real_clips("test", n=settings.n_real, seconds=settings.seconds, seed=settings.seed)
    if real.source != "circor":
        say("WARNING: CirCor not found: simulator clips stand in for real patients")
    evaluator, evaluator_desc = get_evaluator(evaluator_path, settings, out, say)
    say("evaluator accuracy ...")
    accuracy = evaluator_accuracy(evaluator, real, settings)
    half_a, half_b = H.split_halves(real, settings.seed)
    read_a, read_b = H.read(evaluator, half_a), H.read(evaluator, half_b)
    floor_pairs = [(half_a.audio[j], b) for j, b in zip(H.pair_by_findings(half_b.findings, half_a.findings),
                                                           half_b.audio)]
    rows: dict[str, dict | None] = {floor_name(real.source):
                                    H.quality_row(half_a, read_a, half_b, read_b, floor_pairs)}
    say("H-LDM metrics ...")
    generated = H.generate_clips(pipe, half_b.findings, "generated", seed=settings.seed, seconds=settings.seconds)
    rows["H-LDM (ours)"] = model_row(pipe, evaluator, half_a, read_a, half_b, settings, gen=generated)
    placed = {}
    for label, p in others.items():
        flags = tuple(sorted(p.config.ablations))
        row_name = f"{EXPECTED_ROWS[flags]} [{label}]" if flags in EXPECTED_ROWS else label
        placed[flags] = True
        say(f"{label} metrics ...")
        rows[row_name] = model_row(p, evaluator, half_a, read_a, half_b, settings, ad_series=settings.ad_series)
    for flags, row_name in EXPECTED_ROWS.items():
        if flags not in placed:
            rows[row_name] = None
    say("sampler sweep ...")
    sweep = {}
    for sampler, steps in SWEEP:
        key = f"{sampler}-{steps}"
        if sampler == "ddpm" and not settings.sweep_ddpm:
            sweep[key] = None
            continue
        sweep[key] = model_row(pipe, evaluator, half_a, read_a, half_b, settings, sampler=sampler, steps=steps)
    say("counterfactual ...")
    cf = counterfactual_section(pipe, evaluator, real, settings)
    rows["H-LDM (ours)"]["AD"] = cf["generated"].summary["AD"]
    say("augmentation ...")
    from hldm.eval import augmentation

    train = H.real_clips("train", n=settings.aug_train, seconds=settings.seconds, seed=settings.seed)
    aug = augmentation.run(pipe, train, real, seeds=range(settings.seed, settings.seed + settings.aug_seeds),
                           steps=settings.aug_steps, per_class=settings.aug_per_class, seconds=settings.seconds,
                           cfg=evaluator.cfg)
    say("listener ...")
    listener = LR.run(pipe, real, half_a, generated, settings.listener_seconds, settings.listener_seeds,
                      settings.seed)
    say("your recording: edits of held-out recordings ...")
    edits = ER.run(pipe, settings.edit_per_pitch, settings.edit_normals, settings.listener_seconds, settings.seed)
    say("figures ...")
    from hldm.clinical.knowledge_graph import default_graph
    from hldm.clinical.vocabulary import CONDITIONS

    kg = default_graph()
    conds = CONDITIONS[:settings.grid_conditions]
    grid = pipe.generate([kg.typical_findings(c) for c in conds], seed=settings.seed, seconds=settings.seconds)
    figures.spectrogram_grid(out / "conditions.png", [(c, g.audio) for c, g in zip(conds, grid)])
    first = [c for c in cf["generated"].clips if c.series == 0 and c.kind == "grade"]
    figures.grade_sweep(out / "grade_sweep.png",
                        {k: cf[k].summary["grade"]["band_db_by_grade"]
                         for k in ("generated", "real_edit", "simulator")},
                        [(f"grade {c.findings.grade}", c.audio) for c in first[::max(1, len(first) // 3)]])
    figures.metric_bars(out / "metric_bars.png", {k: v for k, v in rows.items() if v is not None})
    ctx = {"name": name, "checkpoint": checkpoint, "ablations": ", ".join(pipe.config.ablations) or "full model",
           "quick": quick, "settings": settings, "real_source": real.source, "n_real": len(real),
           "n_patients": len(set(real.groups)), "n_a": len(half_a), "n_b": len(half_b),
           "evaluator_desc": evaluator_desc, "device": str(pipe.device),
           "date": datetime.datetime.now().isoformat(timespec="seconds"),
           "evaluator_accuracy": accuracy, "rows": rows, "sweep": sweep, "counterfactual": cf,
           "augmentation": aug, "listener": listener, "edits": edits, "wall_min": (time.perf_counter() - start) / 60}
    (out / "report.md").write_text(render_markdown(ctx))
    (out / "metrics.json").write_text(json.dumps(_jsonable({k: v for k, v in ctx.items()}), indent=1))
    return out / "report.md"
