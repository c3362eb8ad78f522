//! Log-mel spectrograms of waveforms: the input of speech and audio models that do not take
//! the raw waveform (Whisper, audio-spectrogram transformers, most sound classifiers).
//!
//! Defined as librosa defines them, which is what Whisper's own feature extractor computes:
//! a centred STFT (the waveform reflected by `n_fft / 2` at both ends), a periodic Hann
//! window, the power `|X|^2`, a Slaney-scale mel filterbank with Slaney area normalisation
//! (`librosa.filters.mel`'s defaults), then `log10(max(mel, 1e-10))`. The FFT is `realfft`
//! (on `rustfft`), already in the build for resampling. Checked against librosa on a
//! committed recording (`tests/data/make_audio_reference.py`).

use realfft::RealFftPlanner;
use realfft::RealToComplex;
use std::sync::Arc;

/// Most mel bands, and the longest FFT, a spectrogram may ask for.
pub const MAX_MELS: usize = 512;
pub const MAX_FFT: usize = 1 << 15;
/// Most samples the STFT of one row may take (frames x n_fft): 45x Whisper's 30 s input
/// (3001 x 400), a fraction of a second of one core.
pub const MAX_STFT_SAMPLES: usize = 1 << 26;

/// What is done to the log-mel values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MelScale {
    /// `log10(max(mel, 1e-10))`, `1 + samples / hop` frames.
    Log10,
    /// Whisper's features: the last frame dropped (`samples / hop` frames: 3000 for 30 s at
    /// 16 kHz with hop 160), values floored at 8 below the clip's maximum, then
    /// `(v + 4) / 4`.
    Whisper,
}

impl MelScale {
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "log10" => Some(Self::Log10),
            "whisper" => Some(Self::Whisper),
            _ => None,
        }
    }
}

/// A log-mel spectrogram of `samples`-long waveforms at `rate` Hz.
#[derive(Clone)]
pub struct MelSpectrogram {
    pub n_fft: usize,
    pub hop: usize,
    pub n_mels: usize,
    pub scale: MelScale,
    samples: usize,
    /// Per band: the first FFT bin it weighs and the weights from there.
    bands: Arc<Vec<(usize, Vec<f32>)>>,
    window: Arc<Vec<f32>>,
    fft: Arc<dyn RealToComplex<f32>>,
}

impl std::fmt::Debug for MelSpectrogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MelSpectrogram")
            .field("n_fft", &self.n_fft)
            .field("hop", &self.hop)
            .field("n_mels", &self.n_mels)
            .field("scale", &self.scale)
            .field("samples", &self.samples)
            .finish()
    }
}

impl MelSpectrogram {
    /// Checks the sizes; the reason when they do not make a spectrogram.
    pub fn new(
        rate: u32,
        samples: usize,
        n_fft: usize,
        hop: usize,
        n_mels: usize,
        scale: MelScale,
    ) -> Result<Self, String> {
        if !(2..=MAX_FFT).contains(&n_fft) || hop == 0 || hop > n_fft {
            return Err(format!(
                "n_fft must be from 2 to {MAX_FFT} and hop_length from 1 to n_fft; got \
                 n_fft {n_fft}, hop_length {hop}"
            ));
        }
        if !(1..=MAX_MELS).contains(&n_mels) {
            return Err(format!("n_mels must be from 1 to {MAX_MELS}; got {n_mels}"));
        }
        // The work of one row: frames x n_fft samples through the FFT. A tiny hop with a
        // long FFT over a long waveform would hold a CPU-pool thread for hours.
        let frames = 1 + samples / hop;
        if frames.saturating_mul(n_fft) > MAX_STFT_SAMPLES {
            return Err(format!(
                "{frames} frames of {n_fft} samples is over the {MAX_STFT_SAMPLES} samples a \
                 spectrogram may transform per row; use a larger hop_length or a shorter n_fft"
            ));
        }
        if samples <= n_fft / 2 {
            return Err(format!(
                "the waveform ({samples} samples) must be longer than n_fft / 2 ({})",
                n_fft / 2
            ));
        }
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(n_fft);
        Ok(Self {
            n_fft,
            hop,
            n_mels,
            scale,
            samples,
            bands: Arc::new(slaney_filterbank(rate, n_fft, n_mels)),
            window: Arc::new(periodic_hann(n_fft)),
            fft,
        })
    }

    pub fn frames(&self) -> usize {
        match self.scale {
            MelScale::Log10 => 1 + self.samples / self.hop,
            MelScale::Whisper => self.samples / self.hop,
        }
    }

    /// The tensor's shape: `[n_mels, frames]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.n_mels, self.frames()]
    }

    /// Writes the spectrogram of `wave` (`samples` long) into `out` (`n_mels * frames`,
    /// band-major).
    pub fn write(&self, wave: &[f32], out: &mut [f32]) -> Result<(), String> {
        let frames = self.frames();
        let half = self.n_fft / 2;
        // Reflection without the edge sample, as numpy's and torch's "reflect".
        let at = |i: isize| -> f32 {
            let n = wave.len() as isize;
            let mut j = i;
            if j < 0 {
                j = -j;
            }
            if j >= n {
                j = 2 * (n - 1) - j;
            }
            wave.get(j.clamp(0, n - 1) as usize).copied().unwrap_or(0.0)
        };
        let mut input = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut power = vec![0f32; spectrum.len()];
        for t in 0..frames {
            let start = (t * self.hop) as isize - half as isize;
            for (k, (x, w)) in input.iter_mut().zip(self.window.iter()).enumerate() {
                *x = at(start + k as isize) * w;
            }
            self.fft
                .process_with_scratch(&mut input, &mut spectrum, &mut scratch)
                .map_err(|e| format!("FFT: {e}"))?;
            for (p, c) in power.iter_mut().zip(&spectrum) {
                *p = c.re * c.re + c.im * c.im;
            }
            for (m, (first, weights)) in self.bands.iter().enumerate() {
                let energy: f32 = weights
                    .iter()
                    .zip(&power[*first..])
                    .map(|(w, p)| w * p)
                    .sum();
                out[m * frames + t] = energy.max(1e-10).log10();
            }
        }
        if self.scale == MelScale::Whisper {
            let top = out.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            for v in out.iter_mut() {
                *v = (v.max(top - 8.0) + 4.0) / 4.0;
            }
        }
        Ok(())
    }
}

/// `scipy.signal.get_window('hann', n, fftbins=True)`: periodic, as librosa and torch use.
fn periodic_hann(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let phase = 2.0 * std::f64::consts::PI * i as f64 / n as f64;
            (0.5 - 0.5 * phase.cos()) as f32
        })
        .collect()
}

/// librosa's `hz_to_mel` with `htk=False`: linear below 1 kHz, logarithmic above.
fn hz_to_mel(hz: f64) -> f64 {
    let (f_sp, min_log_hz, min_log_mel) = (200.0 / 3.0, 1000.0, 15.0);
    let log_step = 6.4f64.ln() / 27.0;
    if hz >= min_log_hz {
        min_log_mel + (hz / min_log_hz).ln() / log_step
    } else {
        hz / f_sp
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    let (f_sp, min_log_hz, min_log_mel) = (200.0 / 3.0, 1000.0, 15.0);
    let log_step = 6.4f64.ln() / 27.0;
    if mel >= min_log_mel {
        min_log_hz * (log_step * (mel - min_log_mel)).exp()
    } else {
        f_sp * mel
    }
}

/// `librosa.filters.mel(sr=rate, n_fft, n_mels)` (fmin 0, fmax rate/2, Slaney norm), each
/// band kept as its non-zero run of weights.
fn slaney_filterbank(rate: u32, n_fft: usize, n_mels: usize) -> Vec<(usize, Vec<f32>)> {
    let bins = n_fft / 2 + 1;
    let nyquist = f64::from(rate) / 2.0;
    let fft_hz: Vec<f64> = (0..bins)
        .map(|k| nyquist * k as f64 / (bins - 1) as f64)
        .collect();
    let (low, high) = (hz_to_mel(0.0), hz_to_mel(nyquist));
    let edges: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(low + (high - low) * i as f64 / (n_mels + 1) as f64))
        .collect();
    (0..n_mels)
        .map(|m| {
            let (left, centre, right) = (edges[m], edges[m + 1], edges[m + 2]);
            let norm = 2.0 / (right - left);
            let weights: Vec<f64> = fft_hz
                .iter()
                .map(|f| {
                    let rising = (f - left) / (centre - left);
                    let falling = (right - f) / (right - centre);
                    rising.min(falling).max(0.0) * norm
                })
                .collect();
            let first = weights.iter().position(|w| *w > 0.0).unwrap_or(0);
            let last = weights.iter().rposition(|w| *w > 0.0).unwrap_or(0);
            let run = if weights[first] > 0.0 {
                weights[first..=last].iter().map(|w| *w as f32).collect()
            } else {
                Vec::new()
            };
            (first, run)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn le_floats(path: &str) -> Vec<f32> {
        std::fs::read(path)
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    /// The committed recording's waveform (16-bit PCM WAV, mono, 16 kHz) as librosa reads it.
    fn recording() -> Vec<f32> {
        let bytes = std::fs::read("../tests/data/audio/chirp.wav").unwrap();
        bytes[44..]
            .chunks_exact(2)
            .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
            .collect()
    }

    #[test]
    fn the_log_mel_spectrogram_is_librosas() {
        let wave = recording();
        for (scale, file) in [
            (MelScale::Log10, "../tests/data/audio/chirp_logmel.f32"),
            (MelScale::Whisper, "../tests/data/audio/chirp_whisper.f32"),
        ] {
            let spec = MelSpectrogram::new(16_000, wave.len(), 400, 160, 80, scale).unwrap();
            let expected = le_floats(file);
            assert_eq!(spec.n_mels * spec.frames(), expected.len(), "{scale:?}");
            let mut out = vec![0f32; expected.len()];
            spec.write(&wave, &mut out).unwrap();
            let worst = out
                .iter()
                .zip(&expected)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            // Measured: 7.7e-5 (log10) and 1.9e-5 (Whisper) at most, over 8080 values.
            assert!(worst < 2e-4, "{scale:?}: largest difference {worst}");
        }
    }

    #[test]
    fn sizes_that_make_no_spectrogram_are_refused() {
        let bad = |n_fft, hop, mels, samples| {
            MelSpectrogram::new(16_000, samples, n_fft, hop, mels, MelScale::Log10).unwrap_err()
        };
        assert!(bad(400, 0, 80, 16_000).contains("hop_length"));
        assert!(bad(400, 160, 0, 16_000).contains("n_mels"));
        assert!(bad(400, 160, 80, 100).contains("longer than n_fft / 2"));
        assert!(bad(32_768, 1, 1, 4_000_000).contains("larger hop_length"));
        let ok = MelSpectrogram::new(16_000, 480_000, 400, 160, 80, MelScale::Whisper).unwrap();
        assert_eq!(ok.shape(), [80, 3000], "Whisper's 30 s input");
    }

    #[test]
    fn the_filterbank_covers_the_spectrum_with_rising_bands() {
        let bands = slaney_filterbank(16_000, 400, 80);
        assert_eq!(bands.len(), 80);
        let firsts: Vec<usize> = bands.iter().map(|b| b.0).collect();
        assert!(firsts.windows(2).all(|w| w[0] <= w[1]), "{firsts:?}");
        assert!(bands.iter().all(|b| !b.1.is_empty()));
        assert!(bands.last().unwrap().0 + bands.last().unwrap().1.len() <= 201);
    }
}
