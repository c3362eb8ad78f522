//! Images to model tensors, a batch at a time: decode (PNG, JPEG, WebP, GIF, BMP, TIFF, by
//! their bytes, not a name), bring it to the target size ([`Fit`]: cover and center-crop,
//! fit inside and pad, or stretch), and scale to Float32 in NCHW or NHWC order with a per-channel mean and std (the transform
//! image classifiers are trained with). One image per rayon task: the SQL functions call
//! these kernels inside `crate::runtime::run_on_cpu_pool`, never on a runtime thread.
//!
//! The `image` crate decodes (it is the maintained pure-Rust decoder set; its JPEG path is
//! zune-jpeg), with limits on the declared size and the decoder's allocation, so a small
//! file that declares a huge image fails that row instead of the process.
//!
//! A value that does not decode is a null, and [`image_errors`] says why for each row; the
//! strict form fails the batch naming the row and the reason.

use super::decoded::{decode_errors, tensor_per_row};
use datafusion::arrow::array::{ArrayRef, FixedSizeListArray, StringArray};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::arrow::error::ArrowError;
use image::imageops::FilterType;
use std::sync::Arc;

/// Largest target side a tensor may have: 1024 x 1024 x 3 Float32 is 12 MiB a row.
pub const MAX_TENSOR_SIDE: u32 = 1024;
/// Largest image a value may declare, per side (a 16k x 16k RGB image is 768 MiB decoded).
const MAX_DECLARED_SIDE: u32 = 16_384;
/// What the decoder may allocate for one image.
const MAX_DECODE_BYTES: u64 = 256 << 20;

/// Channel order of the tensor of one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// channels, rows, columns: `[3, height, width]` (PyTorch, ONNX vision models).
    Nchw,
    /// rows, columns, channels: `[height, width, 3]` (TensorFlow, Keras).
    Nhwc,
}

impl Layout {
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "nchw" | "chw" => Some(Self::Nchw),
            "nhwc" | "hwc" => Some(Self::Nhwc),
            _ => None,
        }
    }
}

/// How an image of another aspect ratio is brought to the target size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fit {
    /// Resize to cover the target keeping the aspect ratio, then take the center
    /// (torchvision's Resize + CenterCrop: classifiers).
    Crop,
    /// Resize to fit inside the target keeping the aspect ratio, at the top left; the rest is
    /// zero (after normalisation): the text-line convention of OCR models, nothing cut off.
    Pad,
    /// Resize to the target, ignoring the aspect ratio.
    Stretch,
}

impl Fit {
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "crop" => Some(Self::Crop),
            "pad" => Some(Self::Pad),
            "stretch" => Some(Self::Stretch),
            _ => None,
        }
    }
}

/// The tensor an image becomes.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageTransform {
    pub height: u32,
    pub width: u32,
    pub layout: Layout,
    pub fit: Fit,
    /// Subtracted from each channel after scaling to [0, 1] (R, G, B).
    pub mean: [f32; 3],
    /// Then divided by.
    pub std: [f32; 3],
}

impl ImageTransform {
    /// Values per image.
    pub fn width_of_row(&self) -> usize {
        3 * self.height as usize * self.width as usize
    }

    /// The shape of one row's tensor, as the fixed-shape tensor extension type records it.
    pub fn shape(&self) -> [usize; 3] {
        let (h, w) = (self.height as usize, self.width as usize);
        match self.layout {
            Layout::Nchw => [3, h, w],
            Layout::Nhwc => [h, w, 3],
        }
    }

    /// The output field's type: a fixed-size list of Float32, one per value.
    pub fn data_type(&self) -> DataType {
        DataType::FixedSizeList(
            Arc::new(Field::new("item", DataType::Float32, false)),
            self.width_of_row() as i32,
        )
    }

    /// Each channel's output value for each 8-bit input value: built once per batch.
    fn lookup(&self) -> [[f32; 256]; 3] {
        std::array::from_fn(|c| {
            std::array::from_fn(|v| (v as f32 / 255.0 - self.mean[c]) / self.std[c])
        })
    }

    /// Decodes and transforms one image into `out` (zeroed, `width_of_row` long).
    fn write(&self, bytes: &[u8], scaled: &[[f32; 256]; 3], out: &mut [f32]) -> Result<(), String> {
        let rgb = decode(bytes)?.to_rgb8();
        let (w0, h0) = rgb.dimensions();
        if w0 == 0 || h0 == 0 {
            return Err("the image is empty".into());
        }
        let (tw, th) = (f64::from(self.width), f64::from(self.height));
        let (sw, sh) = (f64::from(w0), f64::from(h0));
        let side = |v: f64, at_most: u32| (v.round() as u32).clamp(1, at_most);
        // The resized image's size, and where the target's top left falls in it.
        let (rw, rh) = match self.fit {
            Fit::Crop => {
                let scale = f64::max(tw / sw, th / sh);
                let cover = |v: f64, at_least: u32| (v.round() as u32).max(at_least);
                (
                    cover(sw * scale, self.width),
                    cover(sh * scale, self.height),
                )
            }
            Fit::Pad => {
                let scale = f64::min(tw / sw, th / sh);
                (side(sw * scale, self.width), side(sh * scale, self.height))
            }
            Fit::Stretch => (self.width, self.height),
        };
        let resized = if (rw, rh) == (w0, h0) {
            rgb
        } else {
            image::imageops::resize(&rgb, rw, rh, FilterType::Triangle)
        };
        let (x0, y0) = match self.fit {
            Fit::Crop => ((rw - self.width) / 2, (rh - self.height) / 2),
            Fit::Pad | Fit::Stretch => (0, 0),
        };
        // Cells past a padded image keep the block's zero.
        let (h, w) = (self.height.min(rh) as usize, self.width.min(rw) as usize);
        let (full_h, full_w) = (self.height as usize, self.width as usize);
        for y in 0..h {
            for x in 0..w {
                let pixel = resized.get_pixel(x0 + x as u32, y0 + y as u32).0;
                for c in 0..3 {
                    let at = match self.layout {
                        Layout::Nchw => c * full_h * full_w + y * full_w + x,
                        Layout::Nhwc => (y * full_w + x) * 3 + c,
                    };
                    out[at] = scaled[c][pixel[c] as usize];
                }
            }
        }
        Ok(())
    }
}

fn decode(bytes: &[u8]) -> Result<image::DynamicImage, String> {
    if bytes.is_empty() {
        return Err("the file is empty (0 bytes)".into());
    }
    let reader = || {
        let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| e.to_string())?;
        match reader.format() {
            Some(format) => Ok((reader, format)),
            None => Err(String::from(
                "not an image in a known format (PNG, JPEG, WebP, GIF, BMP, TIFF)",
            )),
        }
    };
    let limits = || {
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(MAX_DECLARED_SIDE);
        limits.max_image_height = Some(MAX_DECLARED_SIDE);
        limits.max_alloc = Some(MAX_DECODE_BYTES);
        limits
    };
    // The header first (no pixels are read), so a file declaring a huge image is named
    // with its size; the decode itself runs under the same limits.
    let (header, format) = reader()?;
    let (width, height) = header
        .into_dimensions()
        .map_err(|e| format!("{format:?} header does not read: {}", e.to_string().trim()))?;
    if width > MAX_DECLARED_SIDE || height > MAX_DECLARED_SIDE {
        return Err(format!(
            "the image declares {width} x {height} pixels, over the limit of \
             {MAX_DECLARED_SIDE} a side"
        ));
    }
    let (mut pixels, _) = reader()?;
    pixels.limits(limits());
    pixels.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => format!(
            "the image ({width} x {height} pixels) needs more than {} MiB to decode",
            MAX_DECODE_BYTES >> 20
        ),
        e => format!("{format:?} does not decode: {}", e.to_string().trim()),
    })
}

/// One tensor per row; a null where the value is null or does not decode, unless `strict`,
/// where a value that does not decode fails the batch naming its row and why.
pub fn image_tensor(
    x: &ArrayRef,
    transform: &ImageTransform,
    strict: bool,
) -> Result<FixedSizeListArray, ArrowError> {
    let scaled = transform.lookup();
    tensor_per_row(
        x,
        transform.width_of_row(),
        strict,
        "an image",
        |bytes, out| transform.write(bytes, &scaled, out),
    )
}

/// Why each row does not decode as an image: null where it does (or is null).
pub fn image_errors(x: &ArrayRef) -> Result<StringArray, ArrowError> {
    decode_errors(x, |bytes| decode(bytes).err())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use datafusion::arrow::array::{Array, AsArray, BinaryArray};
    use image::{ImageFormat, Rgb, RgbImage};

    fn encoded(image: &RgbImage, format: ImageFormat) -> Vec<u8> {
        let mut bytes = std::io::Cursor::new(Vec::new());
        image.write_to(&mut bytes, format).unwrap();
        bytes.into_inner()
    }

    fn column(values: Vec<Option<&[u8]>>) -> ArrayRef {
        Arc::new(BinaryArray::from(values))
    }

    fn plain(height: u32, width: u32, layout: Layout) -> ImageTransform {
        ImageTransform {
            height,
            width,
            layout,
            fit: Fit::Crop,
            mean: [0.0; 3],
            std: [1.0; 3],
        }
    }

    #[test]
    fn pad_keeps_the_whole_image_at_the_top_left_and_stretch_fills_the_target() {
        // 2 x 1: red, green. Padded into 1 x 4 it stays as it is, then two zero columns;
        // with mean 0.5 and std 0.5 the image's cells are in [-1, 1] and the padding is 0.
        let mut img = RgbImage::new(2, 1);
        img.put_pixel(0, 0, Rgb([255, 0, 0]));
        img.put_pixel(1, 0, Rgb([0, 255, 0]));
        let x = column(vec![Some(&encoded(&img, ImageFormat::Png))]);
        let transform = ImageTransform {
            fit: Fit::Pad,
            mean: [0.5; 3],
            std: [0.5; 3],
            ..plain(1, 4, Layout::Nchw)
        };
        let padded = image_tensor(&x, &transform, true).unwrap().value(0);
        let padded = padded.as_primitive::<datafusion::arrow::datatypes::Float32Type>();
        assert_eq!(
            padded.values().to_vec(),
            [1., -1., 0., 0., -1., 1., 0., 0., -1., -1., 0., 0.]
        );
        // A tall image padded into a wide target is scaled to the target's height.
        let tall = RgbImage::from_pixel(10, 20, Rgb([255, 255, 255]));
        let x = column(vec![Some(&encoded(&tall, ImageFormat::Png))]);
        let padded = image_tensor(
            &x,
            &ImageTransform {
                fit: Fit::Pad,
                ..plain(4, 8, Layout::Nhwc)
            },
            true,
        )
        .unwrap()
        .value(0);
        let padded = padded.as_primitive::<datafusion::arrow::datatypes::Float32Type>();
        let white_per_row: Vec<usize> = padded
            .values()
            .chunks(8 * 3)
            .map(|row| row.iter().filter(|v| **v > 0.99).count() / 3)
            .collect();
        assert_eq!(white_per_row, [2, 2, 2, 2]);
        let stretched = image_tensor(
            &x,
            &ImageTransform {
                fit: Fit::Stretch,
                ..plain(4, 8, Layout::Nhwc)
            },
            true,
        )
        .unwrap()
        .value(0);
        let stretched = stretched.as_primitive::<datafusion::arrow::datatypes::Float32Type>();
        assert!(stretched.values().iter().all(|v| *v > 0.99));
    }

    #[test]
    fn a_wide_image_is_cropped_to_its_center_in_either_layout() {
        // 4 x 2: black, red, green, white columns. Covering 2 x 2 needs no resize; the
        // center crop keeps the red and green columns.
        let mut img = RgbImage::new(4, 2);
        for y in 0..2 {
            img.put_pixel(0, y, Rgb([0, 0, 0]));
            img.put_pixel(1, y, Rgb([255, 0, 0]));
            img.put_pixel(2, y, Rgb([0, 255, 0]));
            img.put_pixel(3, y, Rgb([255, 255, 255]));
        }
        let png = encoded(&img, ImageFormat::Png);
        let x = column(vec![Some(&png)]);
        let nchw = image_tensor(&x, &plain(2, 2, Layout::Nchw), true).unwrap();
        let values = nchw.value(0);
        let values = values.as_primitive::<datafusion::arrow::datatypes::Float32Type>();
        // R plane, then G, then B; rows of [red, green].
        assert_eq!(
            values.values().to_vec(),
            [1., 0., 1., 0., 0., 1., 0., 1., 0., 0., 0., 0.]
        );
        let nhwc = image_tensor(&x, &plain(2, 2, Layout::Nhwc), true).unwrap();
        let values = nhwc.value(0);
        let values = values.as_primitive::<datafusion::arrow::datatypes::Float32Type>();
        assert_eq!(
            values.values().to_vec(),
            [1., 0., 0., 0., 1., 0., 1., 0., 0., 0., 1., 0.]
        );
    }

    #[test]
    fn mean_and_std_normalise_each_channel_and_jpeg_decodes_too() {
        let img = RgbImage::from_pixel(12, 8, Rgb([255, 128, 0]));
        let transform = ImageTransform {
            height: 4,
            width: 4,
            layout: Layout::Nchw,
            fit: Fit::Crop,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        };
        for (format, tolerance) in [(ImageFormat::Png, 1e-6), (ImageFormat::Jpeg, 0.05)] {
            let bytes = encoded(&img, format);
            let out = image_tensor(&column(vec![Some(&bytes)]), &transform, true).unwrap();
            let row = out.value(0);
            let row = row.as_primitive::<datafusion::arrow::datatypes::Float32Type>();
            for (c, value) in [1.0f32, 128.0 / 255.0, 0.0].into_iter().enumerate() {
                let expected = (value - transform.mean[c]) / transform.std[c];
                for v in &row.values()[c * 16..(c + 1) * 16] {
                    assert!(
                        (v - expected).abs() < tolerance * 4.0,
                        "{format:?} {c}: {v}"
                    );
                }
            }
        }
    }

    #[test]
    fn what_does_not_decode_is_a_null_with_its_reason_or_an_error_when_strict() {
        let good = encoded(&RgbImage::new(3, 3), ImageFormat::Png);
        let mut cut = good.clone();
        cut.truncate(good.len() / 2);
        let x = column(vec![
            Some(&good),
            Some(b"not an image at all"),
            None,
            Some(&cut),
        ]);
        let out = image_tensor(&x, &plain(2, 2, Layout::Nchw), false).unwrap();
        assert_eq!(
            (0..4).map(|i| out.is_valid(i)).collect::<Vec<_>>(),
            [true, false, false, false]
        );
        let reasons = image_errors(&x).unwrap();
        assert!(reasons.is_null(0) && reasons.is_null(2));
        assert!(
            reasons.value(1).contains("not an image"),
            "{}",
            reasons.value(1)
        );
        assert!(!reasons.value(3).is_empty());
        let err = image_tensor(&x, &plain(2, 2, Layout::Nchw), true).unwrap_err();
        assert!(err.to_string().contains("row 1"), "{err}");
    }

    /// CRC-32 (IEEE), as PNG chunks carry it.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for b in bytes {
            crc ^= u32::from(*b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn an_image_declaring_a_huge_size_is_refused_without_allocating_it() {
        // A valid PNG whose header chunk declares 100000 x 100000 pixels (with its CRC).
        let mut png = encoded(&RgbImage::new(1, 1), ImageFormat::Png);
        png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        let crc = crc32(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        let x = column(vec![Some(&png)]);
        let reasons = image_errors(&x).unwrap();
        assert!(
            reasons.value(0).to_lowercase().contains("limit"),
            "{}",
            reasons.value(0)
        );
        let out = image_tensor(&x, &plain(2, 2, Layout::Nchw), false).unwrap();
        assert!(out.is_null(0));
    }

    #[test]
    fn a_batch_whose_tensors_are_too_large_is_refused_naming_the_size() {
        let x = column(vec![None; 1000]);
        let err = image_tensor(&x, &plain(1024, 1024, Layout::Nchw), false).unwrap_err();
        assert!(err.to_string().contains("MiB"), "{err}");
    }
}
