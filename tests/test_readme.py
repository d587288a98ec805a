"""README's code runs as written: the Python API and the command line on a tiny random model, the gradio_client
calls against app.py on loopback (`app_url`). Only the checkpoint path and the app's URL are the test's own."""
import re
import shlex
from pathlib import Path

import pytest
import soundfile as sf

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
SHIPPED = "checkpoints/default"
APP = "http://127.0.0.1:7860/"


def block(lang: str, containing: str) -> str:
    found = [b for b in re.findall(rf"```{lang}\n(.*?)```", README, re.S) if containing in b]
    assert len(found) == 1, f"README: expected one {lang} block with {containing!r}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from hldm.models.hldm import HLDMConfig
    from hldm.pipeline import HLDMPipeline

    pipe = HLDMPipeline.from_config(HLDMConfig.tiny(labels_only=True), device="cpu")
    return pipe.save_pretrained(tmp_path_factory.mktemp("readme") / "model")


def test_python_api(checkpoint, tmp_path, monkeypatch, capsys):
    code = block("python", "HLDMPipeline")
    assert f'"{SHIPPED}"' in code
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(code.replace(f'"{SHIPPED}"', repr(str(checkpoint))), scope)
    printed = re.search(r"print\(g\.prompts\.l2\)  # (.*), \.\.\.", code).group(1)
    assert capsys.readouterr().out.startswith(printed)
    assert scope["sr"] == 4000 and scope["audio"].shape == (10 * 4000,)
    assert scope["w"].changed_fields == ("grade",) and scope["w"].b.findings.grade == 2


def test_command_line(checkpoint, tmp_path, monkeypatch):
    import json

    from hldm.cli import main

    line = next(line for line in block("sh", "-m hldm generate").splitlines() if "-m hldm generate" in line)
    python, dash_m, package, *argv = shlex.split(line, comments=True)
    assert (dash_m, package) == ("-m", "hldm")
    monkeypatch.chdir(tmp_path)
    assert main([*argv, "--checkpoint", str(checkpoint), "--device", "cpu"]) == 0
    out = tmp_path / argv[argv.index("--out") + 1]
    findings = json.loads(out.with_suffix(".json").read_text())["findings"]
    assert (findings["condition"], findings["grade"], findings["murmur"]) == ("mitral regurgitation", 4, "present")
    assert sf.info(out).samplerate == 4000


def test_gradio_client(app_url, tmp_path, monkeypatch):
    code = block("python", "gradio_client")
    assert f'"{APP}"' in code
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")  # the block sets it too; this undoes it afterwards
    monkeypatch.chdir(tmp_path)
    from hldm.clinical.vocabulary import Findings
    from hldm.data.simulator import simulate

    patient = Findings(murmur="present", timing="holosystolic", shape="plateau", grade=2, pitch="medium",
                       quality="blowing", location="MV", heart_rate=80.0)
    sf.write(tmp_path / "patient.wav", simulate(patient, seconds=8.0, seed=3, noise_level=0.02).audio, 4000)
    scope: dict = {}
    exec(code.replace(f'"{APP}"', repr(f"{app_url}/")), scope)
    assert scope["what"]["after"]["grade"] == 4 and scope["what"]["level_db"][1] > scope["what"]["level_db"][0] + 6
    assert sf.info(scope["louder"]).duration == pytest.approx(8.0)
    findings = scope["record"]["findings"]
    assert (findings["condition"], findings["grade"], findings["murmur"]) == ("mitral regurgitation", 4, "present")
    assert scope["record"]["seed"] == 7
    assert sf.info(scope["wav"]).samplerate == 4000 and sf.info(scope["wav"]).duration == pytest.approx(10.0)
    assert scope["pair"]["changed_fields"] == ["grade"] and scope["pair"]["after"]["findings"]["grade"] == 2
    assert sf.info(scope["edited"]).duration == pytest.approx(10.0, abs=0.01)
