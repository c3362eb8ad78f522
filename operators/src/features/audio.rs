//! Audio to model tensors, a batch at a time: decode (WAV, FLAC, MP3, Ogg Vorbis, AAC/ALAC
//! in MP4, by their bytes, not a name), mix the channels down to mono, resample to the
//! model's rate, and cut or zero-pad to a fixed length: the waveform input of speech and
//! audio classifiers. One recording per rayon task, inside `run_on_cpu_pool`.
//!
//! Symphonia decodes (the maintained pure-Rust decoder set); rubato resamples (FFT
//! resampler with an anti-aliasing filter: plain interpolation would alias). Only the
//! packets the fixed length needs are decoded, so a long or lying file costs what a short
//! one does.

use super::decoded::{decode_errors, tensor_per_row};
use super::spectrogram::MelSpectrogram;
use datafusion::arrow::array::{ArrayRef, FixedSizeListArray, StringArray};
use datafusion::arrow::error::ArrowError;
use rubato::{FftFixedIn, Resampler};
use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{CODEC_TYPE_NULL, DecoderOptions};
use symphonia::core::errors::Error as DecodeError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

/// Most samples one recording's tensor may hold: 262 s at 16 kHz, 16 MiB of Float32.
pub const MAX_AUDIO_SAMPLES: usize = 1 << 22;
/// Highest rate a tensor may ask for, and a source may declare.
pub const MAX_RATE: u32 = 384_000;
/// Most source frames decoded for one recording (128 MiB of mono Float32): a long tensor
/// at a low rate from a high-rate file could otherwise ask for hours of a compressed file.
const MAX_DECODED_FRAMES: usize = 1 << 25;

/// The tensor a recording becomes: `samples` mono values at `rate` Hz, from its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioTransform {
    pub rate: u32,
    pub samples: usize,
}

impl AudioTransform {
    fn write(&self, bytes: &[u8], out: &mut [f32]) -> Result<(), String> {
        let (source_rate, mono) = decode_mono(bytes, |rate| {
            // What the output needs of the source, and a little for the resampler's filter.
            (self.samples as u64 * u64::from(rate)).div_ceil(u64::from(self.rate)) as usize + 1024
        })?;
        let wave = if source_rate == self.rate {
            mono
        } else {
            resample(&mono, source_rate, self.rate, self.samples)?
        };
        let n = wave.len().min(out.len());
        out[..n].copy_from_slice(&wave[..n]);
        Ok(())
    }
}

/// The recording's rate and its first frames mixed to mono: at most `frames(rate)` of them.
fn decode_mono(bytes: &[u8], frames: impl Fn(u32) -> usize) -> Result<(u32, Vec<f32>), String> {
    if bytes.is_empty() {
        return Err("the file is empty (0 bytes)".into());
    }
    let source = MediaSourceStream::new(
        Box::new(std::io::Cursor::new(bytes.to_vec())),
        Default::default(),
    );
    let probed = symphonia::default::get_probe()
        .format(
            &Hint::new(),
            source,
            &FormatOptions::default(),
            &MetadataOptions::default(),
        )
        .map_err(|e| {
            format!("not audio in a known format (WAV, FLAC, MP3, Ogg Vorbis, MP4): {e}")
        })?;
    let mut reader = probed.format;
    let track = reader
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or("the file has no audio track")?;
    let track_id = track.id;
    let rate = track
        .codec_params
        .sample_rate
        .filter(|r| (1..=MAX_RATE).contains(r))
        .ok_or("the audio track declares no sample rate, or one over 384 kHz")?;
    let mut decoder = symphonia::default::get_codecs()
        .make(&track.codec_params, &DecoderOptions::default())
        .map_err(|e| format!("its codec is not supported: {e}"))?;
    let wanted = frames(rate);
    if wanted > MAX_DECODED_FRAMES {
        return Err(format!(
            "the tensor needs {wanted} frames of this {rate} Hz recording, over the limit of \
             {MAX_DECODED_FRAMES}: ask for a higher sample_rate or fewer seconds"
        ));
    }
    let mut mono: Vec<f32> = Vec::with_capacity(wanted.min(MAX_AUDIO_SAMPLES));
    let mut interleaved: Option<SampleBuffer<f32>> = None;
    while mono.len() < wanted {
        let packet = match reader.next_packet() {
            Ok(packet) => packet,
            Err(DecodeError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(format!("the audio does not read: {e}")),
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = match decoder.decode(&packet) {
            Ok(decoded) => decoded,
            // A damaged packet is skipped, as players do; a file of only those has no audio.
            Err(DecodeError::DecodeError(_)) => continue,
            Err(e) => return Err(format!("the audio does not decode: {e}")),
        };
        let spec = *decoded.spec();
        let channels = spec.channels.count().max(1);
        let buffer = match &mut interleaved {
            Some(b) if b.capacity() >= decoded.capacity() * channels => b,
            slot => slot.insert(SampleBuffer::new(decoded.capacity() as u64, spec)),
        };
        buffer.copy_interleaved_ref(decoded);
        let scale = 1.0 / channels as f32;
        mono.extend(
            buffer
                .samples()
                .chunks(channels)
                .map(|frame| frame.iter().sum::<f32>() * scale),
        );
    }
    if mono.is_empty() {
        return Err("the file holds no audio samples".into());
    }
    mono.truncate(wanted);
    Ok((rate, mono))
}

/// `wave` at `from` Hz as `want` samples at `to` Hz (fewer if the recording is shorter).
fn resample(wave: &[f32], from: u32, to: u32, want: usize) -> Result<Vec<f32>, String> {
    const CHUNK: usize = 1024;
    let failed = |e: &dyn std::fmt::Display| format!("resampling {from} Hz to {to} Hz: {e}");
    let mut resampler =
        FftFixedIn::<f32>::new(from as usize, to as usize, CHUNK, 2, 1).map_err(|e| failed(&e))?;
    // The filter delays the output: drop that many samples from its start.
    let delay = resampler.output_delay();
    let mut out = Vec::with_capacity(want + delay + CHUNK);
    let mut chunks = wave.chunks(CHUNK);
    for chunk in chunks.by_ref() {
        let produced = if chunk.len() == CHUNK {
            resampler.process(&[chunk], None)
        } else {
            resampler.process_partial(Some(&[chunk]), None)
        }
        .map_err(|e| failed(&e))?;
        out.extend_from_slice(&produced[0]);
        if out.len() >= want + delay {
            break;
        }
    }
    // Flush what the filter still holds.
    while out.len() < want + delay {
        let produced = resampler
            .process_partial(None::<&[&[f32]]>, None)
            .map_err(|e| failed(&e))?;
        if produced[0].is_empty() {
            break;
        }
        out.extend_from_slice(&produced[0]);
    }
    let expected = (wave.len() as u64 * u64::from(to)).div_ceil(u64::from(from)) as usize;
    let end = (delay + want.min(expected)).min(out.len());
    Ok(out.get(delay..end).unwrap_or_default().to_vec())
}

/// One tensor per row: mono at the transform's rate, cut or zero-padded to its length; a
/// null where the value is null or does not decode, unless `strict`.
pub fn audio_tensor(
    x: &ArrayRef,
    transform: &AudioTransform,
    strict: bool,
) -> Result<FixedSizeListArray, ArrowError> {
    tensor_per_row(x, transform.samples, strict, "audio", |bytes, out| {
        transform.write(bytes, out)
    })
}

/// One log-mel spectrogram per row: the waveform of `wave` (as [`audio_tensor`] makes it),
/// through `spectrogram`; nulls and `strict` as for [`audio_tensor`].
pub fn audio_spectrogram(
    x: &ArrayRef,
    wave: &AudioTransform,
    spectrogram: &MelSpectrogram,
    strict: bool,
) -> Result<FixedSizeListArray, ArrowError> {
    let [bands, frames] = spectrogram.shape();
    tensor_per_row(x, bands * frames, strict, "audio", |bytes, out| {
        let mut samples = vec![0f32; wave.samples];
        wave.write(bytes, &mut samples)?;
        spectrogram.write(&samples, out)
    })
}

/// Why each row does not decode as audio: null where it does (or is null).
pub fn audio_errors(x: &ArrayRef) -> Result<StringArray, ArrowError> {
    decode_errors(x, |bytes| decode_mono(bytes, |_| 1).err())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use datafusion::arrow::array::{Array, AsArray, BinaryArray};
    use datafusion::arrow::datatypes::Float32Type;
    use std::sync::Arc;

    /// A 16-bit PCM WAV file of `channels` interleaved channels.
    fn wav(rate: u32, channels: u16, frames: &[Vec<i16>]) -> Vec<u8> {
        let data: Vec<u8> = frames
            .iter()
            .flat_map(|f| f.iter().flat_map(|s| s.to_le_bytes()))
            .collect();
        let block = channels * 2;
        let mut out = Vec::new();
        out.extend_from_slice(b"RIFF");
        out.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
        out.extend_from_slice(b"WAVEfmt ");
        out.extend_from_slice(&16u32.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&channels.to_le_bytes());
        out.extend_from_slice(&rate.to_le_bytes());
        out.extend_from_slice(&(rate * u32::from(block)).to_le_bytes());
        out.extend_from_slice(&block.to_le_bytes());
        out.extend_from_slice(&16u16.to_le_bytes());
        out.extend_from_slice(b"data");
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&data);
        out
    }

    fn sine(rate: u32, hz: f32, seconds: f32) -> Vec<i16> {
        let n = (rate as f32 * seconds) as usize;
        (0..n)
            .map(|i| ((i as f32 * hz * std::f32::consts::TAU / rate as f32).sin() * 16000.0) as i16)
            .collect()
    }

    fn row(out: &FixedSizeListArray, i: usize) -> Vec<f32> {
        out.value(i).as_primitive::<Float32Type>().values().to_vec()
    }

    #[test]
    fn stereo_is_mixed_to_mono_and_short_audio_is_padded() {
        // Left +8000, right -4000: the mean is +2000 (of 32768).
        let frames: Vec<Vec<i16>> = (0..100).map(|_| vec![8000, -4000]).collect();
        let x: ArrayRef = Arc::new(BinaryArray::from_iter_values([wav(16_000, 2, &frames)]));
        let t = AudioTransform {
            rate: 16_000,
            samples: 160,
        };
        let out = audio_tensor(&x, &t, true).unwrap();
        let values = row(&out, 0);
        assert!(
            values[..100]
                .iter()
                .all(|v| (v - 2000.0 / 32768.0).abs() < 1e-4)
        );
        assert!(values[100..].iter().all(|v| *v == 0.0));
    }

    #[test]
    fn resampling_keeps_a_tone_and_its_loudness() {
        // 440 Hz at 44.1 kHz to 16 kHz: count the zero crossings of one second.
        let tone = sine(44_100, 440.0, 1.5);
        let frames: Vec<Vec<i16>> = tone.iter().map(|s| vec![*s]).collect();
        let x: ArrayRef = Arc::new(BinaryArray::from_iter_values([wav(44_100, 1, &frames)]));
        let t = AudioTransform {
            rate: 16_000,
            samples: 16_000,
        };
        let values = row(&audio_tensor(&x, &t, true).unwrap(), 0);
        let crossings = values
            .windows(2)
            .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
            .count();
        assert!((878..=882).contains(&crossings), "{crossings} crossings");
        let peak = values[1000..15000].iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!((peak - 16000.0 / 32768.0).abs() < 0.02, "peak {peak}");
    }

    #[test]
    fn a_tensor_needing_hours_of_the_source_is_refused_before_decoding() {
        let x: ArrayRef = Arc::new(BinaryArray::from_iter_values([wav(48_000, 1, &[vec![1]])]));
        let t = AudioTransform {
            rate: 100,
            samples: 100_000,
        };
        let reason = audio_tensor(&x, &t, true).unwrap_err().to_string();
        assert!(reason.contains("over the limit of 33554432"), "{reason}");
    }

    #[test]
    fn what_is_not_audio_is_a_null_with_its_reason() {
        let good = wav(8_000, 1, &[vec![1], vec![2]]);
        let mut cut = good.clone();
        cut.truncate(20);
        let x: ArrayRef = Arc::new(BinaryArray::from(vec![
            Some(good.as_slice()),
            Some(b"plain text, not audio".as_slice()),
            Some(b"".as_slice()),
            Some(cut.as_slice()),
        ]));
        let t = AudioTransform {
            rate: 8_000,
            samples: 4,
        };
        let out = audio_tensor(&x, &t, false).unwrap();
        assert_eq!(
            (0..4).map(|i| out.is_valid(i)).collect::<Vec<_>>(),
            [true, false, false, false]
        );
        let reasons = audio_errors(&x).unwrap();
        assert!(reasons.is_null(0));
        assert!(
            reasons.value(1).contains("not audio in a known format"),
            "{}",
            reasons.value(1)
        );
        assert!(reasons.value(2).contains("empty"), "{}", reasons.value(2));
        assert!(!reasons.value(3).is_empty());
        let err = audio_tensor(&x, &t, true).unwrap_err();
        assert!(
            err.to_string().contains("row 1 of the batch is not audio"),
            "{err}"
        );
    }
}
