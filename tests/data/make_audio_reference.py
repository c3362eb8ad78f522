"""Makes the log-mel spectrogram reference: a recording, and librosa's spectrograms of it.

    python -m venv /tmp/librosa && /tmp/librosa/bin/pip install librosa==0.11.0
    /tmp/librosa/bin/python tests/data/make_audio_reference.py

writes, deterministically (outputs are committed; librosa is not part of shoal's set-up):

- `audio/chirp.wav`: 1 s of 16-bit mono PCM at 16 kHz: a chirp from 100 Hz to 6 kHz, a
  440 Hz tone and a little noise (seeded);
- `audio/chirp_logmel.f32`: `log10(max(melspectrogram, 1e-10))` with Whisper's sizes
  (n_fft 400, hop 160, 80 mels; centred, reflect padding, power 2, Slaney mels): 80 x 101
  little-endian float32, band-major;
- `audio/chirp_whisper.f32`: the same normalised as Whisper's `log_mel_spectrogram` (last
  frame dropped, floored at max - 8, (v + 4) / 4): 80 x 100.
"""

import wave
from pathlib import Path

import librosa
import numpy as np

OUT = Path(__file__).parent / "audio"
RATE = 16_000


def main() -> None:
    t = np.arange(RATE) / RATE
    chirp = np.sin(2 * np.pi * (100 * t + (6000 - 100) / 2 * t**2))
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    noise = 0.01 * np.random.default_rng(18).standard_normal(RATE)
    pcm = np.clip((0.5 * chirp + tone + noise) * 0.6 * 32767, -32768, 32767).astype("<i2")
    OUT.mkdir(exist_ok=True)
    with wave.open(str(OUT / "chirp.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.tobytes())
    y = pcm.astype(np.float64) / 32768.0
    mel = librosa.feature.melspectrogram(
        y=y, sr=RATE, n_fft=400, hop_length=160, n_mels=80, center=True,
        pad_mode="reflect", power=2.0)
    logmel = np.log10(np.maximum(mel, 1e-10))
    logmel.astype("<f4").tofile(OUT / "chirp_logmel.f32")
    whisper = logmel[:, :-1]
    whisper = (np.maximum(whisper, whisper.max() - 8.0) + 4.0) / 4.0
    whisper.astype("<f4").tofile(OUT / "chirp_whisper.f32")
    print(f"log-mel {logmel.shape}, whisper {whisper.shape} -> {OUT}")


if __name__ == "__main__":
    main()
