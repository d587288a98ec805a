"""`python -m hldm bench` in its quickest mode on a tiny random model: the report's structure, no timings asserted."""
import json
import math

import pytest

from hldm.bench import STAGE_NAMES, BenchSettings, app_start, clear_prompt_caches, gpu, main, render, run_bench
from hldm.models.hldm import HLDMConfig
from hldm.pipeline import STAGES, HLDMPipeline

SECONDS = 2.0


@pytest.fixture(scope="module")
def pipe():
    return HLDMPipeline.from_config(HLDMConfig.tiny(), seed=0, device="cpu")


def positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_generation_reports_its_stage_timings(pipe):
    g = pipe.generate({"murmur": "absent"}, seed=0, seconds=SECONDS)
    assert tuple(g.timings) == tuple(g.cpu_timings) == STAGES and all(positive(v) for v in g.timings.values())
    batch = pipe.generate({"murmur": "absent"}, seed=0, seconds=SECONDS, batch=2)
    assert batch[0].timings == batch[1].timings  # one call, one set of timings


def test_clearing_the_prompt_caches_empties_them(pipe):
    pipe.generate({"murmur": "absent"}, seed=0, seconds=SECONDS)
    cond = pipe.model.cond
    assert len(cond.text.embed_cache) > 0 and len(cond.subgraphs) > 0
    clear_prompt_caches(pipe.model)
    assert len(cond.text.embed_cache) == 0 and len(cond.subgraphs) == 0


def test_quick_bench_report_structure(pipe):
    settings = BenchSettings.quick()
    settings.seconds, settings.batches, settings.matmul_seconds = SECONDS, (1, 2), 0.05
    report = run_bench(pipe, settings, "tiny", log=lambda msg: None)
    json.dumps(report)  # JSON-able as written by --json / --out

    lat = report["latency"]
    assert set(lat["stages_s"]) == set(STAGE_NAMES) | {"other"}
    assert all(positive(lat["stages_s"][name]) for name in STAGE_NAMES)  # text is encoded: caches were emptied
    assert lat["seconds_of_audio"] == SECONDS and lat["steps"] == pipe.config.diffusion.steps
    assert set(lat["stages_cpu_s"]) == set(STAGE_NAMES)
    assert all(positive(lat[k]) for k in ("total_s", "warm_total_s", "rtf", "warm_rtf", "denoise_step_ms",
                                          "cpu_total_s", "warm_cpu_total_s", "denoise_step_cpu_ms"))
    assert lat["total_s"] >= sum(lat["stages_s"][name] for name in STAGE_NAMES)
    assert positive(report["what_if"]["total_s"]) and report["what_if"]["change"]
    assert [r["batch"] for r in report["throughput"]] == [1, 2]
    assert all(positive(r[k]) for r in report["throughput"] for k in ("wall_s", "cpu_s", "clips_per_s", "rtf"))
    fl = report["flops"]
    assert all(positive(fl[k]) for k in ("denoise_step_gflop", "vae_decode_gflop", "clip_gflop", "matmul_gflops",
                                         "clip_floor_s", "denoise_achieved_gflops", "denoise_gflop_per_cpu_s",
                                         "matmul_gflop_per_cpu_s", "clip_floor_cpu_s"))
    assert fl["cfg_rows"] == 2 and fl["clip_gflop"] > fl["denoise_step_gflop"]
    opts = {r["optimisation"]: r for r in report["optimisations"]}
    assert {"prompt cache", "batched CFG", "inference_mode", "fewer Griffin-Lim iterations"} <= set(opts)
    assert all(positive(r[k]) for r in opts.values() for k in ("before_ms", "after_ms", "before_cpu_ms", "after_cpu_ms"))
    assert opts["prompt cache"]["before_ms"] == pytest.approx(1e3 * lat["total_s"])
    params = report["model"]["parameters"]
    assert params["total"] == params["vae"] + params["cond"] + params["unet"] and params["unet"] > 0
    assert positive(report["memory"]["peak_rss_gb_one_clip"])
    assert report["memory"]["peak_rss_gb"] >= report["memory"]["peak_rss_gb_one_clip"]
    assert report["machine"]["cores"] >= 1 and "samplers" not in report
    assert "skipped" in report["gpu"] or "runs" in report["gpu"]

    targets = {t["key"]: t for t in report["targets"]}
    assert set(targets) == {"cpu_clip_s", "cpu_rtf", "what_if_s", "app_page_s", "rss_gb", "gpu_clips_per_s"}
    assert targets["cpu_clip_s"]["measured"] == lat["total_s"] and targets["cpu_rtf"]["direction"] == ">="
    assert targets["cpu_clip_s"]["met"] == (lat["total_s"] <= 0.5)
    assert targets["app_page_s"]["measured"] is None and "app" not in report  # no checkpoint given to time
    threads = report["machine"]["torch_threads"]
    assert targets["cpu_clip_s"]["cpu_per_thread"] == pytest.approx(lat["cpu_total_s"] / threads)
    assert targets["rss_gb"]["cpu_per_thread"] is None
    text = render(report)
    assert "audio_inversion" in text and "targets" in text and "what-if pair" in text


def test_cli_quick_json_with_samplers(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--preset", "tiny", "--quick", "--json", "--seconds", "1", "--samplers", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert printed["model"]["source"] == "random tiny-config model" and positive(printed["model"]["load_s"])
    assert [(r["sampler"], r["steps"]) for r in printed["samplers"]] == [("ddim", 50), ("dpmpp", 20), ("dpmpp", 10), ("unipc", 6), ("ddim", 6)]
    assert [r["batch"] for r in printed["throughput"]] == [1, 4]
    assert main(["--checkpoint", str(tmp_path / "missing"), "--quick"]) == 2


def test_app_start_is_timed_to_the_page_and_to_the_model(tmp_path):
    """On the no-checkpoint mode (an untrained tiny model): both moments are seen."""
    out = app_start(tmp_path / "no-checkpoint")
    assert positive(out["page_s"]) and positive(out["model_ready_s"])


def test_gpu_section_runs_its_variants():
    """The GPU section's code path, on the CPU (autocast works there too); torch.compile left out for time."""
    pipe = HLDMPipeline.from_config(HLDMConfig.tiny(labels_only=True), seed=0, device="cpu")
    settings = BenchSettings.quick()
    settings.seconds, settings.gpu_batches, settings.matmul_seconds = 1.0, (1, 2), 0.05
    out = gpu(pipe, settings, device="cpu", compile=False)
    assert [(r["batch"], r["dtype"]) for r in out["runs"]] == [(1, "float32"), (2, "float32"), (2, "float16"),
                                                              (2, "bfloat16")]
    assert all(positive(r["clips_per_s"]) and tuple(r["stages_s"]) == STAGES for r in out["runs"])
    assert out["best_clips_per_s"] == max(r["clips_per_s"] for r in out["runs"])
