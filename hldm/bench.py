"""`python -m hldm bench`: how fast HLDMPipeline is, next to the product's targets.

    python -m hldm bench                       # full run, readable table
    python -m hldm bench --quick --json        # batches 1 and 4, one repeat, JSON on stdout
    python -m hldm bench --samplers            # + one 10 s clip per sampler of the evaluation sweep

Measured, all through `HLDMPipeline` (what the app plays is what is timed):
- latency of one 10 s clip at the model's sampler/steps, split into text encoding,
  graph encoding (+ fusion), denoising, VAE decoding and audio inversion, with the
  prompt caches emptied first (a prompt the app has not seen), and again warm;
- the real-time factor (audio seconds per wall second), the what-if pair latency;
- each optimisation off vs on on the work it changes (prompt cache, batched CFG,
  inference_mode, threads);
- throughput against batch size; peak resident memory (getrusage);
- parameter counts per part, FLOPs per denoising step (FlopCounterMode, the CFG
  batch of 2) and the FLOP floor they imply at the matmul rate this machine
  reaches right now (a 1024^3 fp32 matmul), so a slow figure can be read as
  "compute bound" or "overhead";
- on CUDA: clips/s batched in fp32 and under fp16/bf16 autocast, torch.compile of
  the U-Net on/off, peak GPU memory.

Timings are best-of-N wall clock, each beside the process CPU time it took: a
loaded machine (other processes on the cores) inflates wall time many times over
and CPU time far less, so the load average is printed too, and with `--threads 1`
the CPU figures approach what one idle core would give. Targets are printed with
the figures, never asserted. FAD/CF of each sampler come from the evaluation
report (`python -m hldm eval`, its DDPM-1000/DDIM-50/DPM++ sweep); `--samplers`
adds their latency here.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from hldm.models.checkpoint import CheckpointError
from hldm.paths import DEFAULT_CHECKPOINT

EXAMPLE = {"murmur": "present", "timing": "holosystolic", "shape": "plateau", "grade": 3, "pitch": "high",
           "quality": "blowing", "location": "MV", "radiation": "axilla", "heart_rate": 80.0}
WHAT_IF = {"grade": 4}
STAGE_NAMES = ("text_encoding", "graph_encoding", "denoising", "vae_decoding", "audio_inversion", "conformance")

# (key, what, goal, unit, True when larger is better); "measured" is looked up in the report.
TARGETS = (
    ("cpu_clip_s", "10 s clip end to end on 2 CPU cores", 0.5, "s", False),
    ("cpu_rtf", "real-time factor on CPU", 20.0, "x", True),
    ("what_if_s", "what-if pair", 1.0, "s", False),
    ("app_page_s", "app serving its page after `python app.py`", 3.0, "s", False),
    ("rss_gb", "app memory (peak RSS, model loaded, one clip)", 2.0, "GB", False),
    ("gpu_clips_per_s", "ten-second clips/s batched on one H100", 200.0, "clips/s", True),
)


@dataclass
class BenchSettings:
    seconds: float = 10.0
    repeats: int = 3
    batches: tuple[int, ...] = (1, 4, 16, 64)
    gpu_batches: tuple[int, ...] = (1, 64, 256)
    samplers: bool = False
    ddpm_1000: bool = True  # the sampler sweep's slowest row
    matmul_seconds: float = 1.0
    app_checkpoint: Path | None = None  # time `python app.py` on this checkpoint (None: skip)

    @classmethod
    def quick(cls) -> "BenchSettings":
        return cls(repeats=1, batches=(1, 4), gpu_batches=(1, 64), ddpm_1000=False, matmul_seconds=0.3)


# ----------------------------------------------------------------------------- measuring helpers


def best_of(fn: Callable[[], object], repeats: int) -> tuple[float, float, object]:
    """(least wall seconds, least process CPU seconds over `repeats` calls, the result of the fastest call)."""
    best, best_cpu, out = float("inf"), float("inf"), None
    for _ in range(max(1, repeats)):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        best_cpu = min(best_cpu, cpu)
        if wall < best:
            best, out = wall, result
    return best, best_cpu, out


def clear_prompt_caches(model: torch.nn.Module) -> None:
    """Empty every LRU cache of the conditioner (prompt states and embeddings, patient subgraphs)."""
    from hldm.models.text_encoder import LRU

    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, LRU):
                value.clear()


class TextClock:
    """Wall and CPU seconds spent in the MiniLM text encoder (forward hooks); 0 for a conditioner without text."""

    def __init__(self, model: torch.nn.Module):
        self.wall = self.cpu = 0.0
        self._start = (0.0, 0.0)
        text = getattr(model.cond, "text", None)
        self._handles = [] if text is None else [text.register_forward_pre_hook(self._pre),
                                                 text.register_forward_hook(self._post)]

    def _pre(self, *_):
        self._start = (time.perf_counter(), time.process_time())

    def _post(self, *_):
        self.wall += time.perf_counter() - self._start[0]
        self.cpu += time.process_time() - self._start[1]

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def matmul_rate(device: torch.device, seconds: float, n: int = 1024, dtype=torch.float32) -> tuple[float, float]:
    """(GFLOP per wall second, GFLOP per process CPU second) of an n^3 matmul, best over `seconds`.

    The first is this machine's compute roof right now; the second is the per-core
    rate on CPU, which other processes on the cores disturb far less.
    """
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best, best_cpu, end = float("inf"), float("inf"), time.perf_counter() + seconds
    for i in range(10_000):
        start, start_cpu = time.perf_counter(), time.process_time()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best, best_cpu = min(best, time.perf_counter() - start), min(best_cpu, time.process_time() - start_cpu)
        if i >= 2 and time.perf_counter() > end:
            break
    return 2 * n**3 / best / 1e9, 2 * n**3 / max(best_cpu, 1e-9) / 1e9


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of fn(); attention through SDPA's unfused kernel, the one FlopCounterMode can count."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


# ----------------------------------------------------------------------------- sections


def load_pipeline(checkpoint: str | None, device: str, preset: str | None):
    """(pipeline, what was loaded): the checkpoint when it exists, else a random model of `preset`."""
    from hldm.models.hldm import HLDMConfig
    from hldm.pipeline import HLDMPipeline

    path = Path(checkpoint) if checkpoint else DEFAULT_CHECKPOINT
    if preset is None and (path / "model.safetensors").is_file():
        return HLDMPipeline.from_pretrained(path, device=device), f"checkpoint {path}"
    if checkpoint and preset is None:
        raise FileNotFoundError(f"--checkpoint {checkpoint}: no model.safetensors there")
    preset = preset or "default"
    config = {"default": HLDMConfig.default, "tiny": HLDMConfig.tiny}[preset]()
    why = "" if preset != "default" else f" (no checkpoint at {path})"
    return HLDMPipeline.from_config(config, seed=0, device=device), f"random {preset}-config model{why}"


def latency(pipe, settings: BenchSettings) -> dict:
    """One clip per call, stages split; cold = prompt caches emptied before each call."""
    clock = TextClock(pipe.model)

    def one(cold: bool):
        if cold:
            clear_prompt_caches(pipe.model)
        clock.wall = clock.cpu = 0.0
        g = pipe.generate(EXAMPLE, seed=0, seconds=settings.seconds)
        return g, clock.wall, clock.cpu

    try:
        cold_s, cold_cpu, (g, text_s, text_cpu) = best_of(lambda: one(True), settings.repeats)
        warm_s, warm_cpu, _ = best_of(lambda: one(False), settings.repeats)
    finally:
        clock.close()
    return {"seconds_of_audio": g.seconds, "sampler": g.sampler, "steps": g.steps, "guidance": g.guidance,
            "total_s": cold_s, "warm_total_s": warm_s, "rtf": g.seconds / cold_s, "warm_rtf": g.seconds / warm_s,
            "cpu_total_s": cold_cpu, "warm_cpu_total_s": warm_cpu,
            "stages_s": _stages(g.timings, text_s, cold_s), "stages_cpu_s": _stages(g.cpu_timings, text_cpu, None),
            "denoise_step_ms": 1e3 * g.timings["denoise"] / g.steps,
            "denoise_step_cpu_ms": 1e3 * g.cpu_timings["denoise"] / g.steps}


def _stages(t: dict[str, float], text: float, total: float | None) -> dict[str, float]:
    """Pipeline stage times (Generation.timings) in the report's terms; text split off the conditioning."""
    stages = {"text_encoding": text, "graph_encoding": max(t["condition"] - text, 0.0), "denoising": t["denoise"],
              "vae_decoding": t["decode"], "audio_inversion": t["invert"], "conformance": t["conform"]}
    if total is not None:
        stages["other"] = max(total - sum(stages.values()), 0.0)
    return stages


def what_if(pipe, settings: BenchSettings) -> dict:
    def pair():
        clear_prompt_caches(pipe.model)
        return pipe.what_if(EXAMPLE, WHAT_IF, seed=0, seconds=settings.seconds)

    wall, cpu, w = best_of(pair, settings.repeats)
    return {"change": WHAT_IF, "total_s": wall, "cpu_total_s": cpu, "stages_s": w.a.timings}


def throughput(pipe, batches, seconds: float) -> list[dict]:
    rows = []
    for b in batches:
        wall, cpu, _ = best_of(lambda: pipe.generate(EXAMPLE, seed=0, seconds=seconds, batch=b), 1)
        rows.append({"batch": b, "wall_s": wall, "cpu_s": cpu, "clips_per_s": b / wall, "rtf": b * seconds / wall})
    return rows


def step_inputs(pipe, seconds: float, rows: int) -> tuple[int, tuple[torch.Tensor, ...]]:
    """(feature frames, denoiser inputs z (rows, 16, L), t, c, hr) of one step for a clip of `seconds`."""
    from hldm.audio.features import n_frames
    from hldm.clinical.vocabulary import SAMPLE_RATE

    cfg, dev = pipe.config, pipe.device
    n_feat = n_frames(round(seconds * SAMPLE_RATE))
    z = torch.randn(rows, cfg.unet.latent_channels, pipe.model.vae.latent_length(n_feat), device=dev)
    return n_feat, (z, torch.full((rows,), cfg.diffusion.n_train // 2, device=dev),
                    torch.randn(rows, cfg.unet.cond_dim, device=dev),
                    torch.full((rows,), EXAMPLE["heart_rate"], device=dev))


def flops(pipe, settings: BenchSettings, step_ms: float, step_cpu_ms: float) -> dict:
    """FLOPs of one denoising step (the CFG batch) and of the VAE decode, and the floor they imply."""
    m, d = pipe.model, pipe.config.diffusion
    rows = 1 if d.guidance == 1.0 else 2  # conditional + null branch in one forward
    n_feat, (z, t, c, hr) = step_inputs(pipe, settings.seconds, rows)
    dev = pipe.device
    step = count_flops(lambda: m.denoise(z, t, c, hr))
    decode = count_flops(lambda: m.vae.decode(z[:1], n_feat))
    per_clip = d.steps * step + decode
    roof, roof_cpu = matmul_rate(dev, settings.matmul_seconds)
    return {"denoise_step_gflop": step / 1e9, "cfg_rows": rows, "vae_decode_gflop": decode / 1e9,
            "clip_gflop": per_clip / 1e9, "matmul_gflops": roof, "clip_floor_s": per_clip / 1e9 / roof,
            "matmul_gflop_per_cpu_s": roof_cpu, "clip_floor_cpu_s": per_clip / 1e9 / roof_cpu,
            "denoise_achieved_gflops": step / 1e9 / (step_ms / 1e3),
            "denoise_gflop_per_cpu_s": step / 1e9 / (step_cpu_ms / 1e3)}


def optimisations(pipe, settings: BenchSettings, lat: dict) -> list[dict]:
    """Each speed-up of the pipeline switched off ("before") and on ("after"), timed on the work it
    changes (best of N, wall and CPU ms): the prompt cache on a whole clip (from `latency`), the rest
    on one denoising step of the CFG batch or on the audio inversion of one clip."""
    from hldm.audio.features import GL_ITERS, invert

    m = pipe.model
    n_feat, (z, t, c, hr) = step_inputs(pipe, settings.seconds, 2)
    threads = torch.get_num_threads()
    feat = torch.rand(1, 129, n_feat, device=pipe.device)  # the inversion's cost does not depend on the values
    d = pipe.config.diffusion

    def in_mode(fn, inference=True):
        def run():
            with torch.inference_mode() if inference else torch.enable_grad():
                return fn()
        return run

    def with_threads(n, fn):
        def run():
            torch.set_num_threads(n)
            try:
                return fn()
            finally:
                torch.set_num_threads(threads)
        return run

    def forward():
        return m.denoise(z, t, c, hr)

    step = in_mode(forward)
    cases = [("batched CFG", "conditional and null branch: two forwards of batch 1 -> one forward of batch 2",
              in_mode(lambda: [m.denoise(z[k:k + 1], t[k:k + 1], c[k:k + 1], hr[k:k + 1]) for k in range(2)]), step),
             ("inference_mode", "a denoising step with autograd recording -> under torch.inference_mode",
              in_mode(forward, inference=False), step),
             ("fewer Griffin-Lim iterations", f"inversion of one clip: {GL_ITERS} -> {d.gl_iters} iterations",
              lambda: invert(feat, GL_ITERS, speckle=d.speckle), lambda: invert(feat, d.gl_iters, speckle=d.speckle))]
    if threads > 1:
        cases.append(("threads", f"a denoising step on 1 -> {threads} torch threads", with_threads(1, step), step))
    rows = [{"optimisation": "prompt cache", "change": "a clip whose prompt was never seen -> seen before",
             "before_ms": 1e3 * lat["total_s"], "after_ms": 1e3 * lat["warm_total_s"],
             "before_cpu_ms": 1e3 * lat["cpu_total_s"], "after_cpu_ms": 1e3 * lat["warm_cpu_total_s"]}]
    for name, change, before, after in cases:
        (bw, bc, _), (aw, ac, _) = best_of(before, settings.repeats), best_of(after, settings.repeats)
        rows.append({"optimisation": name, "change": change, "before_ms": 1e3 * bw, "after_ms": 1e3 * aw,
                     "before_cpu_ms": 1e3 * bc, "after_cpu_ms": 1e3 * ac})
    return rows


def sampler_curve(pipe, settings: BenchSettings) -> list[dict]:
    """One clip per (sampler, steps) of the evaluation report's sweep, whose FAD/CF `hldm eval` measures."""
    from hldm.eval.report import SWEEP

    rows = []
    for sampler, steps in SWEEP:
        if sampler == "ddpm" and steps == 1000 and not settings.ddpm_1000:
            continue
        g = pipe.generate(EXAMPLE, seed=0, seconds=settings.seconds, sampler=sampler, steps=steps)
        total = sum(g.timings.values())
        rows.append({"sampler": sampler, "steps": steps, "total_s": total, "cpu_s": sum(g.cpu_timings.values()),
                     "denoise_s": g.timings["denoise"], "rtf": g.seconds / total})
    return rows


def app_start(checkpoint: Path, timeout_s: float = 300.0) -> dict:
    """Seconds from starting `python app.py` to its page answering (GET /config) and to the model
    being ready (its "model ready" line: weights loaded and a warm-up clip made)."""
    import socket
    import subprocess
    import tempfile
    import threading
    import urllib.request

    from hldm.paths import REPO

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1",
                   GRADIO_TEMP_DIR=tmp, MPLCONFIGDIR=tmp)
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--port", str(port), "--checkpoint",
                                 str(checkpoint), "--data-dir", tmp], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        ready = threading.Event()
        out: dict = {"page_s": None, "model_ready_s": None}

        def read() -> None:
            for line in proc.stdout:
                if line.startswith("model ready"):
                    out["model_ready_s"] = time.perf_counter() - start
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        try:
            while time.perf_counter() - start < timeout_s and proc.poll() is None:
                if out["page_s"] is None:
                    try:
                        with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=1) as r:
                            if r.status == 200:
                                out["page_s"] = time.perf_counter() - start
                    except OSError:
                        pass
                if out["page_s"] is not None and ready.wait(0.05):
                    break
                time.sleep(0.05)
        finally:
            proc.terminate()
            proc.wait(30)
    return out


def gpu(pipe, settings: BenchSettings, device: str = "cuda", compile: bool = True) -> dict:
    """Batched clips/s on a GPU: fp32, fp16/bf16 autocast, torch.compile of the U-Net; peak GPU memory.

    Moves `pipe.model` to `device` (the last section that uses it; "cpu" is for tests).
    """
    from hldm.pipeline import HLDMPipeline

    dev = torch.device(device)
    on_gpu = dev.type == "cuda"
    gpu_pipe = HLDMPipeline(pipe.model, dev)
    out = {"name": torch.cuda.get_device_name(dev) if on_gpu else str(dev), "runs": [],
           "matmul_tflops_bf16": matmul_rate(dev, settings.matmul_seconds, 8192 if on_gpu else 256,
                                             torch.bfloat16)[0] / 1e3}

    def run(batch: int, dtype: torch.dtype | None, compiled: bool) -> dict:
        if on_gpu:
            torch.cuda.reset_peak_memory_stats(dev)
        call = lambda: gpu_pipe.generate(EXAMPLE, seed=0, seconds=settings.seconds, batch=batch)  # noqa: E731
        with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            first, _, _ = best_of(call, 1)  # warm-up; compiles when the U-Net is compiled
            wall, _, gens = best_of(call, settings.repeats)
        g = gens[0] if isinstance(gens, list) else gens
        return {"batch": batch, "dtype": str(dtype or torch.float32).replace("torch.", ""), "compiled": compiled,
                "first_call_s": first, "wall_s": wall, "clips_per_s": batch / wall, "stages_s": g.timings,
                "peak_memory_gb": torch.cuda.max_memory_allocated(dev) / 2**30 if on_gpu else None}

    big = max(settings.gpu_batches)
    for b in settings.gpu_batches:
        out["runs"].append(run(b, None, False))
    for dtype in (torch.float16, torch.bfloat16):
        out["runs"].append(run(big, dtype, False))
    if compile:
        eager = pipe.model.unet
        try:
            pipe.model.unet = torch.compile(eager)
            out["runs"].append(run(big, torch.bfloat16, True))
        except Exception as e:  # a compiler missing on the machine is a finding, not a crash
            out["compile_error"] = f"{type(e).__name__}: {e}"
        finally:
            pipe.model.unet = eager
    out["best_clips_per_s"] = max(r["clips_per_s"] for r in out["runs"])
    return out


def machine(device: str) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "device": device, "cuda": torch.cuda.is_available(),
            "load_average": list(os.getloadavg())}


def run_bench(pipe, settings: BenchSettings, source: str = "", log: Callable[[str], None] = print,
              load_s: float | None = None) -> dict:
    """Every section on `pipe`; the report is JSON-able. A CUDA section runs when a GPU is present."""
    report = {"machine": machine(str(pipe.device)), "model": {"source": source, "load_s": load_s,
              "parameters": pipe.model.parameter_counts(), "ablations": list(pipe.config.ablations)}}
    log(f"bench: warm-up ({source})")
    start = time.perf_counter()
    pipe.generate(EXAMPLE | {"grade": 2}, seed=1, seconds=settings.seconds)
    report["first_call_s"] = time.perf_counter() - start
    log("bench: latency of one clip")
    report["latency"] = latency(pipe, settings)
    log("bench: what-if pair")
    report["what_if"] = what_if(pipe, settings)
    report["memory"] = {"peak_rss_gb_one_clip": peak_rss_gb()}
    log(f"bench: throughput, batches {list(settings.batches)}")
    report["throughput"] = throughput(pipe, settings.batches, settings.seconds)
    report["memory"]["peak_rss_gb"] = peak_rss_gb()
    log("bench: FLOPs and the matmul roof")
    report["flops"] = flops(pipe, settings, report["latency"]["denoise_step_ms"],
                            report["latency"]["denoise_step_cpu_ms"])
    log("bench: each optimisation off vs on")
    report["optimisations"] = optimisations(pipe, settings, report["latency"])
    if settings.app_checkpoint is not None:
        log("bench: app start")
        report["app"] = app_start(settings.app_checkpoint)
    if settings.samplers:
        log("bench: sampler sweep")
        report["samplers"] = sampler_curve(pipe, settings)
    if torch.cuda.is_available():
        log("bench: CUDA")
        report["gpu"] = gpu(pipe, settings)
    else:
        report["gpu"] = {"skipped": "no CUDA device on this machine"}
    report["machine"]["load_average_end"] = list(os.getloadavg())
    report["targets"] = targets(report)
    return report


def targets(report: dict) -> list[dict]:
    on_cpu = report["machine"]["device"] == "cpu"
    lat, wif = report["latency"], report["what_if"]
    threads = report["machine"]["torch_threads"]
    # key -> (wall-clock figure, the same from CPU time / threads: what idle cores would approach with
    # perfect scaling over the threads; on a loaded machine the nearer estimate)
    measured = {"cpu_clip_s": (lat["total_s"], lat["cpu_total_s"] / threads) if on_cpu else (None, None),
                "cpu_rtf": (lat["rtf"], lat["seconds_of_audio"] * threads / lat["cpu_total_s"]) if on_cpu
                else (None, None),
                "what_if_s": (wif["total_s"], wif["cpu_total_s"] / threads),
                "app_page_s": (report.get("app", {}).get("page_s"), None),
                "rss_gb": (report["memory"]["peak_rss_gb_one_clip"], None),
                "gpu_clips_per_s": (report["gpu"].get("best_clips_per_s"), None)}
    rows = []
    for key, what, goal, unit, higher in TARGETS:
        value, from_cpu = measured[key]
        met = None if value is None else (value >= goal if higher else value <= goal)
        rows.append({"key": key, "target": what, "goal": goal, "direction": ">=" if higher else "<=", "unit": unit,
                     "measured": value, "cpu_per_thread": from_cpu, "met": met})
    return rows


# ----------------------------------------------------------------------------- text output


def render(report: dict) -> str:
    m, lat, fl = report["machine"], report["latency"], report["flops"]
    lines = [f"H-LDM bench: {report['model']['source']}",
             f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), "
             f"device {m['device']}; load average {m['load_average'][0]:.2f} -> {m['load_average_end'][0]:.2f}"
             + ("  (busy machine: wall times are inflated; compare the CPU columns)"
                if m["load_average"][0] > 1.0 else ""),
             "parameters: " + ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in report["model"]["parameters"].items())
             + ("" if report["model"]["load_s"] is None else f"; loaded in {report['model']['load_s']:.2f} s"),
             "",
             f"one {lat['seconds_of_audio']:g} s clip, {lat['sampler']} {lat['steps']} steps, "
             f"guidance {lat['guidance']} (best of N, prompt caches emptied):",
             f"  {'stage':16s} {'wall ms':>9s} {'CPU ms':>9s}"]
    for name, value in lat["stages_s"].items():
        cpu = lat["stages_cpu_s"].get(name)
        lines.append(f"  {name:16s} {value * 1e3:9.1f} {'' if cpu is None else f'{cpu * 1e3:9.1f}'}")
    lines += [f"  {'total':16s} {lat['total_s'] * 1e3:9.1f} {lat['cpu_total_s'] * 1e3:9.1f}   RTF {lat['rtf']:.2f}",
              f"  prompt cached: {lat['warm_total_s'] * 1e3:.1f} ms (RTF {lat['warm_rtf']:.2f}); "
              f"first call of the process {report['first_call_s']:.2f} s",
              f"  denoising step  {lat['denoise_step_ms']:9.1f} {lat['denoise_step_cpu_ms']:9.1f}",
              f"what-if pair: {report['what_if']['total_s'] * 1e3:.1f} ms wall, "
              f"{report['what_if']['cpu_total_s'] * 1e3:.1f} ms CPU",
              "", "throughput:", "  batch   wall s    CPU s   clips/s   RTF"]
    for r in report["throughput"]:
        lines.append(f"  {r['batch']:5d} {r['wall_s']:8.2f} {r['cpu_s']:8.2f} {r['clips_per_s']:9.2f} {r['rtf']:6.2f}")
    lines += ["", f"FLOPs: {fl['denoise_step_gflop']:.3f} GFLOP per denoising step (batch {fl['cfg_rows']}, CFG), "
              f"{fl['vae_decode_gflop']:.3f} GFLOP VAE decode, {fl['clip_gflop']:.1f} GFLOP per clip",
              f"matmul roof {fl['matmul_gflops']:.1f} GFLOP/s -> floor {fl['clip_floor_s'] * 1e3:.0f} ms per clip "
              f"(U-Net + VAE); the denoiser reaches {fl['denoise_achieved_gflops']:.1f} GFLOP/s",
              f"per CPU second: matmul {fl['matmul_gflop_per_cpu_s']:.1f} GFLOP -> floor "
              f"{fl['clip_floor_cpu_s'] * 1e3:.0f} CPU ms per clip; the denoiser "
              f"{fl['denoise_gflop_per_cpu_s']:.1f} GFLOP",
              f"memory: peak RSS {report['memory']['peak_rss_gb_one_clip']:.2f} GB after one clip, "
              f"{report['memory']['peak_rss_gb']:.2f} GB after the largest batch"]
    lines += ["", "optimisations, off -> on (best of N):",
              f"  {'':22s} {'before ms':>10s} {'after ms':>9s} {'speed-up':>8s} {'CPU before':>10s} {'CPU after':>9s}"]
    for r in report["optimisations"]:
        lines.append(f"  {r['optimisation']:22s} {r['before_ms']:10.1f} {r['after_ms']:9.1f} "
                     f"{r['before_ms'] / r['after_ms']:7.2f}x {r['before_cpu_ms']:10.1f} {r['after_cpu_ms']:9.1f}"
                     f"   {r['change']}")
    if "app" in report:
        a = report["app"]
        lines += ["", "app start (`python app.py`): page served after "
                  + ("-" if a["page_s"] is None else f"{a['page_s']:.1f} s") + ", model ready (weights and a "
                  "warm-up clip) after " + ("-" if a["model_ready_s"] is None else f"{a['model_ready_s']:.1f} s")]
    if "samplers" in report:
        lines += ["", "samplers (one clip; FAD/CF: `python -m hldm eval`):"]
        lines += [f"  {r['sampler']:9s} {r['steps']:5d} steps  {r['total_s']:8.2f} s wall  {r['cpu_s']:8.2f} s CPU  "
                  f"RTF {r['rtf']:.2f}" for r in report["samplers"]]
    g = report["gpu"]
    lines.append("")
    if "skipped" in g:
        lines.append(f"GPU: skipped ({g['skipped']})")
    else:
        lines.append(f"GPU: {g['name']}, bf16 matmul {g['matmul_tflops_bf16']:.0f} TFLOP/s")
        for r in g["runs"]:
            peak = "" if r["peak_memory_gb"] is None else f"peak {r['peak_memory_gb']:.2f} GB"
            lines.append(f"  batch {r['batch']:4d} {r['dtype']:8s} compiled={r['compiled']!s:5s} "
                         f"{r['clips_per_s']:8.1f} clips/s  first call {r['first_call_s']:6.2f} s  {peak}")
        if "compile_error" in g:
            lines.append(f"  torch.compile failed: {g['compile_error']}")
    lines += ["", "targets (measured wall clock, not asserted; 'CPU/thread': CPU time / torch threads, which idle "
                  "cores would approach):"]
    for t in report["targets"]:
        value = "not measured" if t["measured"] is None else f"{t['measured']:.3g} {t['unit']}"
        verdict = "" if t["met"] is None else ("met" if t["met"] else "MISSED")
        goal = f"{t['direction']} {t['goal']:g} {t['unit']}"
        cpu = "" if t["cpu_per_thread"] is None else f"(CPU/thread {t['cpu_per_thread']:.3g})"
        lines.append(f"  {t['target']:48s} goal {goal:18s} measured {value:16s} {verdict:6s} {cpu}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hldm bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    p.add_argument("--quick", action="store_true", help="batches 1 and 4, one repeat, no DDPM-1000")
    p.add_argument("--checkpoint", help=f"model directory (default: {DEFAULT_CHECKPOINT} when it exists, "
                                        "else a randomly initialised default-config model)")
    p.add_argument("--preset", choices=("default", "tiny"), help="benchmark a random model of this preset")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="device of the latency/throughput sections (the targets are CPU figures); "
                        "a CUDA section runs whenever a GPU is present")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's, one per core)")
    p.add_argument("--repeats", type=int, help="calls per latency figure, best kept (default 3, quick 1)")
    p.add_argument("--seconds", type=float, default=10.0, help="clip length (default %(default)s)")
    p.add_argument("--samplers", action="store_true", help="also time the evaluation sweep: DDPM-1000, DDIM-50, DPM++ 20 and 10, UniPC 6, DDIM 6")
    p.add_argument("--no-app", action="store_true", help="skip timing the app's start")
    p.add_argument("--out", help="also write the JSON report to this file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench: --device cuda but no CUDA device is available", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = BenchSettings.quick() if args.quick else BenchSettings()
    settings.seconds, settings.samplers = args.seconds, args.samplers
    if args.repeats:
        settings.repeats = args.repeats
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    start = time.perf_counter()
    try:
        pipe, source = load_pipeline(args.checkpoint, args.device, args.preset)
    except (FileNotFoundError, CheckpointError) as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    if source.startswith("checkpoint") and not args.no_app:
        settings.app_checkpoint = Path(args.checkpoint) if args.checkpoint else DEFAULT_CHECKPOINT
    report = run_bench(pipe, settings, source, log, load_s=time.perf_counter() - start)
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text if args.json else render(report))
    return 0
