"""hldm.audio.io: what an upload turns into, and every refusal."""
import numpy as np
import pytest
import soundfile as sf

from hldm.audio.io import AudioError, load_audio, resample, wav_bytes, write_wav


def _sine(freq, sr, seconds, amp=0.5, channels=1):
    t = np.arange(int(sr * seconds)) / sr
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def _peak_hz(x, sr):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spec)]


def test_wav_44k_stereo_becomes_4k_mono_with_frequency_kept(tmp_path):
    path = tmp_path / "sine.wav"
    sf.write(path, _sine(150.0, 44100, 2.0, channels=2), 44100, subtype="PCM_16")
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) == 8000
    assert abs(_peak_hz(audio, 4000) - 150.0) < 1.0
    assert np.sqrt(np.mean(audio[200:-200] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)


def test_flac_bytes_are_read(tmp_path):
    path = tmp_path / "sine.flac"
    sf.write(path, _sine(80.0, 8000, 1.0), 8000, format="FLAC")
    audio = load_audio(path.read_bytes())
    assert len(audio) == 4000 and abs(_peak_hz(audio, 4000) - 80.0) < 1.5


def test_resampling_removes_content_above_new_nyquist():
    # 3 kHz at 16 kHz would alias to 1 kHz at 4 kHz without an anti-alias filter.
    x = _sine(3000.0, 16000, 1.0)
    y = resample(x, 16000, 4000)
    assert len(y) == 4000
    assert np.sqrt(np.mean(y ** 2)) < 0.01 * np.sqrt(np.mean(x ** 2))


def test_write_wav_round_trips_and_clips(tmp_path):
    x = _sine(100.0, 4000, 1.0, amp=0.25)
    x[10] = 3.0  # overshoot must saturate, not wrap to a negative full-scale click
    x[11] = -3.0
    path = write_wav(tmp_path / "out" / "x.wav", x)
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.subtype) == (4000, 1, "PCM_16")
    y = load_audio(path)
    assert y[10] > 0.99 and y[11] < -0.99
    assert np.max(np.abs(np.delete(y - x, [10, 11]))) < 1e-4
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["x.wav"]  # no temp file left
    assert wav_bytes(x) == path.read_bytes()


@pytest.mark.parametrize("content,match", [
    (b"", "empty"),
    (b"this is a text file, not audio" * 10, "not a readable WAV or FLAC"),
])
def test_refuses_non_audio_bytes(content, match):
    with pytest.raises(AudioError, match=match):
        load_audio(content)


def test_refuses_missing_and_empty_files(tmp_path):
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "nope.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        load_audio(tmp_path / "empty.wav")


def test_refuses_wav_without_samples(tmp_path):
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros(0, np.float32), 4000)
    with pytest.raises(AudioError, match="no samples"):
        load_audio(path)


def test_refuses_too_big_and_too_long(tmp_path):
    data = wav_bytes(_sine(100.0, 4000, 3.0))
    with pytest.raises(AudioError, match="too big"):
        load_audio(data, max_bytes=1000)
    with pytest.raises(AudioError, match="too long"):
        load_audio(data, max_seconds=2.0)
    assert len(load_audio(data, max_seconds=3.0)) == 12000


def test_refuses_nan_and_inf(tmp_path):
    for bad in (np.nan, np.inf):
        x = _sine(100.0, 4000, 1.0)
        x[100] = bad
        path = tmp_path / "bad.wav"
        sf.write(path, x, 4000, subtype="FLOAT")
        with pytest.raises(AudioError, match="NaN or infinite"):
            load_audio(path)


@pytest.mark.parametrize("amp", [0.0, 1e-5])  # all-zero, and a faint hum below the RMS floor
def test_refuses_silence(tmp_path, amp):
    path = tmp_path / "quiet.wav"
    sf.write(path, _sine(100.0, 4000, 1.0, amp=amp), 4000, subtype="FLOAT")
    with pytest.raises(AudioError, match="silent"):
        load_audio(path)


def test_refuses_other_formats(tmp_path):
    path = tmp_path / "x.ogg"
    sf.write(path, _sine(100.0, 8000, 1.0), 8000, format="OGG")
    with pytest.raises(AudioError, match="accepted formats"):
        load_audio(path)


def test_write_refuses_bad_arrays(tmp_path):
    with pytest.raises(AudioError, match="shape"):
        write_wav(tmp_path / "x.wav", np.zeros((2, 100)))
    with pytest.raises(AudioError, match="NaN"):
        wav_bytes(np.array([0.0, np.nan]))
    assert not (tmp_path / "x.wav").exists()
