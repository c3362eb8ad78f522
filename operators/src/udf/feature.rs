//! The feature kernels as SQL functions. Parameters (statistics, vocabularies, boundaries,
//! patterns) are constants, checked when the query is planned; the column is processed
//! whole, once per Arrow batch.
//!
//! ```text
//! scale_standard(x, mean, std)      scale_minmax(x, min, max)     impute(x, value)
//! log1p(x)                          clip(x, lower, upper)         bucketize(x, b1, ..., bk)
//! one_hot(x, 'w1', ..., 'wk')       ordinal_encode(x, 'w1', ...)  hash_bucket(x, buckets)
//! token_count(text)                 hashed_ngrams(text, n, buckets)
//! regex_extract(text, 'pattern', group)
//! image_tensor(content, height, width, 'nchw' | 'nhwc' [, mean_r, mean_g, mean_b, std_r, std_g, std_b])
//! image_tensor_strict(...)          image_error(content)
//! audio_tensor(content, sample_rate, seconds)   audio_tensor_strict(...)   audio_error(content)
//! audio_spectrogram(content, sample_rate, seconds, n_fft, hop_length, n_mels [, 'log10' | 'whisper'])
//! audio_spectrogram_strict(...)
//! text_error(content)
//! ```
//! `image_tensor` gives a null where a value does not decode (`image_error` says why);
//! `image_tensor_strict` fails the statement instead, naming the row and the reason.

use crate::features::audio::{AudioTransform, MAX_AUDIO_SAMPLES, MAX_RATE};
use crate::features::image::{Fit, ImageTransform, Layout, MAX_TENSOR_SIDE};
use crate::features::spectrogram::{MelScale, MelSpectrogram};
use crate::features::tensor::tensor_field;
use crate::features::{MAX_FEATURE_WIDTH, audio, categorical, image, numeric, text};
use crate::runtime::run_on_cpu_pool;
use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::arrow::error::ArrowError;
use datafusion::common::DataFusionError;
use datafusion::common::{Result, ScalarValue, plan_datafusion_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FeatureFunction {
    ScaleStandard,
    ScaleMinmax,
    Impute,
    Log1p,
    Clip,
    Bucketize,
    OneHot,
    OrdinalEncode,
    HashBucket,
    TokenCount,
    HashedNgrams,
    RegexExtract,
    ImageTensor,
    ImageTensorStrict,
    ImageError,
    AudioTensor,
    AudioTensorStrict,
    AudioError,
    AudioSpectrogram,
    AudioSpectrogramStrict,
    TextError,
}

/// What the input column must be.
#[derive(Clone, Copy, PartialEq)]
enum Input {
    Numeric,
    /// Anything with a text form (strings, dictionaries, integer codes).
    Category,
    Text,
    /// Bytes (an image or audio file's content).
    Binary,
}

impl FeatureFunction {
    pub const ALL: [FeatureFunction; 21] = [
        Self::ScaleStandard,
        Self::ScaleMinmax,
        Self::Impute,
        Self::Log1p,
        Self::Clip,
        Self::Bucketize,
        Self::OneHot,
        Self::OrdinalEncode,
        Self::HashBucket,
        Self::TokenCount,
        Self::HashedNgrams,
        Self::RegexExtract,
        Self::ImageTensor,
        Self::ImageTensorStrict,
        Self::ImageError,
        Self::AudioTensor,
        Self::AudioTensorStrict,
        Self::AudioError,
        Self::AudioSpectrogram,
        Self::AudioSpectrogramStrict,
        Self::TextError,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::ScaleStandard => "scale_standard",
            Self::ScaleMinmax => "scale_minmax",
            Self::Impute => "impute",
            Self::Log1p => "log1p",
            Self::Clip => "clip",
            Self::Bucketize => "bucketize",
            Self::OneHot => "one_hot",
            Self::OrdinalEncode => "ordinal_encode",
            Self::HashBucket => "hash_bucket",
            Self::TokenCount => "token_count",
            Self::HashedNgrams => "hashed_ngrams",
            Self::RegexExtract => "regex_extract",
            Self::ImageTensor => "image_tensor",
            Self::ImageTensorStrict => "image_tensor_strict",
            Self::ImageError => "image_error",
            Self::AudioTensor => "audio_tensor",
            Self::AudioTensorStrict => "audio_tensor_strict",
            Self::AudioError => "audio_error",
            Self::AudioSpectrogram => "audio_spectrogram",
            Self::AudioSpectrogramStrict => "audio_spectrogram_strict",
            Self::TextError => "text_error",
        }
    }

    /// Names of the constant parameters after the column; a trailing "..." means one or more.
    fn parameters(self) -> &'static [&'static str] {
        match self {
            Self::ScaleStandard => &["mean", "std"],
            Self::ScaleMinmax => &["min", "max"],
            Self::Impute => &["value"],
            Self::Log1p
            | Self::TokenCount
            | Self::ImageError
            | Self::AudioError
            | Self::TextError => &[],
            Self::Clip => &["lower", "upper"],
            Self::Bucketize => &["boundary..."],
            Self::OneHot | Self::OrdinalEncode => &["word..."],
            Self::HashBucket => &["buckets"],
            Self::HashedNgrams => &["n", "buckets"],
            Self::RegexExtract => &["pattern", "group"],
            // Mean and std are optional (all six or none: without them values are in
            // [0, 1]), and so is fit ('crop' unless given).
            Self::ImageTensor | Self::ImageTensorStrict => &[
                "height", "width", "layout", "mean_r", "mean_g", "mean_b", "std_r", "std_g",
                "std_b", "fit",
            ],
            Self::AudioTensor | Self::AudioTensorStrict => &["sample_rate", "seconds"],
            // The scale is optional ('log10' unless given).
            Self::AudioSpectrogram | Self::AudioSpectrogramStrict => &[
                "sample_rate",
                "seconds",
                "n_fft",
                "hop_length",
                "n_mels",
                "scale",
            ],
        }
    }

    fn input(self) -> Input {
        match self {
            Self::OneHot | Self::OrdinalEncode | Self::HashBucket => Input::Category,
            Self::TokenCount | Self::HashedNgrams | Self::RegexExtract => Input::Text,
            Self::ImageTensor
            | Self::ImageTensorStrict
            | Self::ImageError
            | Self::AudioTensor
            | Self::AudioTensorStrict
            | Self::AudioError
            | Self::AudioSpectrogram
            | Self::AudioSpectrogramStrict
            | Self::TextError => Input::Binary,
            _ => Input::Numeric,
        }
    }

    fn usage(self) -> String {
        format!("{}(column, {})", self.name(), self.parameters().join(", ")).replace(", )", ")")
    }

    fn return_type(self, params: &[ScalarValue]) -> Result<DataType> {
        let list = |width: usize| {
            DataType::FixedSizeList(
                Arc::new(Field::new("item", DataType::Float32, false)),
                width as i32,
            )
        };
        Ok(match self {
            Self::Bucketize | Self::OrdinalEncode | Self::TokenCount => DataType::Int32,
            Self::HashBucket => DataType::Int64,
            Self::RegexExtract | Self::ImageError | Self::AudioError | Self::TextError => {
                DataType::Utf8
            }
            Self::ImageTensor | Self::ImageTensorStrict => {
                self.image_transform(params)?.data_type()
            }
            Self::AudioTensor | Self::AudioTensorStrict => {
                list(self.audio_transform(params)?.samples)
            }
            Self::AudioSpectrogram | Self::AudioSpectrogramStrict => {
                let [bands, frames] = self.spectrogram(params)?.1.shape();
                list(bands * frames)
            }
            Self::OneHot => list(self.width(params.len(), "words")?),
            Self::HashedNgrams => list(self.width(self.count(params, 1)?, "buckets")?),
            _ => DataType::Float64,
        })
    }

    fn check_arguments(self, fields: &[FieldRef], params: &[Option<&ScalarValue>]) -> Result<()> {
        let declared = self.parameters();
        let variadic = declared.last().is_some_and(|p| p.ends_with("..."));
        let given = fields.len().saturating_sub(1);
        let count_ok = if variadic {
            given >= declared.len()
        } else if matches!(self, Self::ImageTensor | Self::ImageTensorStrict) {
            // Mean and std (six) and fit are optional.
            matches!(given, 3 | 4 | 9 | 10)
        } else if matches!(self, Self::AudioSpectrogram | Self::AudioSpectrogramStrict) {
            matches!(given, 5 | 6)
        } else {
            given == declared.len()
        };
        if fields.is_empty() || !count_ok {
            return plan_err!(
                "{} takes {}; got {} argument(s)",
                self.name(),
                self.usage(),
                fields.len()
            );
        }
        let input = fields[0].data_type();
        let value_type = match input {
            DataType::Dictionary(_, v) => v.as_ref(),
            t => t,
        };
        let fits = match self.input() {
            Input::Numeric => value_type.is_numeric() || *value_type == DataType::Null,
            Input::Text => matches!(
                value_type,
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
            ),
            Input::Category => !value_type.is_nested(),
            Input::Binary => matches!(
                value_type,
                DataType::Binary
                    | DataType::LargeBinary
                    | DataType::BinaryView
                    | DataType::FixedSizeBinary(_)
                    | DataType::Null
            ),
        };
        if !fits {
            let wanted = match self.input() {
                Input::Numeric => "a numeric column",
                Input::Text => "a text column",
                Input::Category => "a column of strings or integer codes",
                Input::Binary => "a binary column (an image's bytes)",
            };
            return plan_err!(
                "{}: column '{}' is {input}, expected {wanted}",
                self.name(),
                fields[0].name()
            );
        }
        for (i, p) in params.iter().enumerate() {
            if p.is_none_or(|p| p.is_null()) {
                let name = declared.get(i).or(declared.last()).unwrap_or(&"parameter");
                return plan_err!(
                    "{}: parameter {} ({}) must be a non-null constant, as in {}",
                    self.name(),
                    i + 2,
                    name.trim_end_matches("..."),
                    self.usage()
                );
            }
        }
        Ok(())
    }

    fn number(self, params: &[ScalarValue], i: usize) -> Result<f64> {
        let value = params[i].cast_to(&DataType::Float64).map_err(|_| {
            plan_datafusion_err!(
                "{}: parameter {} must be a number, found {}",
                self.name(),
                i + 2,
                params[i]
            )
        })?;
        match value {
            ScalarValue::Float64(Some(v)) => Ok(v),
            other => plan_err!("{}: parameter {} is {other}", self.name(), i + 2),
        }
    }

    fn count(self, params: &[ScalarValue], i: usize) -> Result<usize> {
        let v = self.number(params, i)?;
        if v < 1.0 || v.fract() != 0.0 || v > 1e7 {
            let declared = self.parameters();
            let name = declared.get(i).or(declared.last()).unwrap_or(&"parameter");
            return plan_err!(
                "{}: parameter {} ({}) must be a whole number from 1 to 10000000, found {v}",
                self.name(),
                i + 2,
                name.trim_end_matches("...")
            );
        }
        Ok(v as usize)
    }

    /// A feature vector's width, refused past [`MAX_FEATURE_WIDTH`] while planning (a row
    /// of the output holds that many Float32s).
    fn width(self, width: usize, of: &str) -> Result<usize> {
        if width > MAX_FEATURE_WIDTH {
            return plan_err!(
                "{}: {width} {of} is over the limit of {MAX_FEATURE_WIDTH} features per row \
                 (each row holds one Float32 per feature)",
                self.name()
            );
        }
        Ok(width)
    }

    /// The image transform of `image_tensor`'s parameters, checked while planning.
    fn image_transform(self, params: &[ScalarValue]) -> Result<ImageTransform> {
        let side = |i: usize, what: &str| -> Result<u32> {
            let v = self.count(params, i)?;
            if v > MAX_TENSOR_SIDE as usize {
                return plan_err!(
                    "{}: {what} {v} is over the limit of {MAX_TENSOR_SIDE} pixels",
                    self.name()
                );
            }
            Ok(v as u32)
        };
        let layout_text = self.text(params, 2)?;
        let Some(layout) = Layout::parse(&layout_text) else {
            return plan_err!(
                "{}: layout '{layout_text}' is not 'nchw' or 'nhwc'",
                self.name()
            );
        };
        let fit = match params.len() {
            4 | 10 => {
                let text = self.text(params, params.len() - 1)?;
                let Some(fit) = Fit::parse(&text) else {
                    return plan_err!(
                        "{}: fit '{text}' is not 'crop', 'pad' or 'stretch'",
                        self.name()
                    );
                };
                fit
            }
            _ => Fit::Crop,
        };
        let (mut mean, mut std) = ([0.0f32; 3], [1.0f32; 3]);
        if params.len() >= 9 {
            for c in 0..3 {
                mean[c] = self.number(params, 3 + c)? as f32;
                std[c] = self.number(params, 6 + c)? as f32;
                if !(std[c].is_finite() && std[c] > 0.0 && mean[c].is_finite()) {
                    return plan_err!(
                        "{}: each std must be a positive number and each mean finite",
                        self.name()
                    );
                }
            }
        }
        Ok(ImageTransform {
            height: side(0, "height")?,
            width: side(1, "width")?,
            layout,
            fit,
            mean,
            std,
        })
    }

    /// The audio transform of `audio_tensor`'s parameters, checked while planning.
    fn audio_transform(self, params: &[ScalarValue]) -> Result<AudioTransform> {
        let rate = self.count(params, 0)?;
        let seconds = self.number(params, 1)?;
        let samples = (rate as f64 * seconds).round();
        if rate > MAX_RATE as usize || !(samples >= 1.0 && samples <= MAX_AUDIO_SAMPLES as f64) {
            return plan_err!(
                "{}: {rate} Hz for {seconds} s is {samples} samples; a rate may be at most \
                 {MAX_RATE} Hz and a recording at most {MAX_AUDIO_SAMPLES} samples",
                self.name()
            );
        }
        Ok(AudioTransform {
            rate: rate as u32,
            samples: samples as usize,
        })
    }

    /// The waveform and spectrogram of `audio_spectrogram`'s parameters, checked while
    /// planning. The whole spectrogram is bounded as a waveform is.
    fn spectrogram(self, params: &[ScalarValue]) -> Result<(AudioTransform, MelSpectrogram)> {
        let wave = self.audio_transform(params)?;
        let scale = match params.get(5) {
            Some(_) => {
                let text = self.text(params, 5)?;
                let Some(scale) = MelScale::parse(&text) else {
                    return plan_err!(
                        "{}: scale '{text}' is not 'log10' or 'whisper'",
                        self.name()
                    );
                };
                scale
            }
            None => MelScale::Log10,
        };
        let (n_fft, hop, mels) = (
            self.count(params, 2)?,
            self.count(params, 3)?,
            self.count(params, 4)?,
        );
        let spectrogram = MelSpectrogram::new(wave.rate, wave.samples, n_fft, hop, mels, scale)
            .map_err(|reason| plan_datafusion_err!("{}: {reason}", self.name()))?;
        let [bands, frames] = spectrogram.shape();
        if bands * frames > MAX_AUDIO_SAMPLES {
            return plan_err!(
                "{}: {bands} mel bands x {frames} frames is over the limit of \
                 {MAX_AUDIO_SAMPLES} values a row",
                self.name()
            );
        }
        Ok((wave, spectrogram))
    }

    fn text(self, params: &[ScalarValue], i: usize) -> Result<String> {
        match &params[i] {
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)) => Ok(s.clone()),
            other => Ok(other.to_string()),
        }
    }

    /// Runs the kernel on one batch's column.
    pub fn apply(self, x: &ArrayRef, params: &[ScalarValue]) -> Result<ArrayRef> {
        let numbers = |from: usize| -> Result<Vec<f64>> {
            (from..params.len())
                .map(|i| self.number(params, i))
                .collect()
        };
        let words =
            || -> Result<Vec<String>> { (0..params.len()).map(|i| self.text(params, i)).collect() };
        let named = |e: ArrowError| match e {
            // A batch's output over the kernels' allocation bound: ask for less.
            ArrowError::MemoryError(m) => {
                DataFusionError::ResourcesExhausted(format!("{}: {m}", self.name()))
            }
            // A value the kernel cannot take (an image that does not decode, when strict).
            ArrowError::ComputeError(m) => {
                DataFusionError::Execution(format!("{}: {m}", self.name()))
            }
            e => plan_datafusion_err!("{}: {e}", self.name()),
        };
        let out: ArrayRef = match self {
            Self::ScaleStandard => Arc::new(
                numeric::scale_standard(x, self.number(params, 0)?, self.number(params, 1)?)
                    .map_err(named)?,
            ),
            Self::ScaleMinmax => Arc::new(
                numeric::scale_minmax(x, self.number(params, 0)?, self.number(params, 1)?)
                    .map_err(named)?,
            ),
            Self::Impute => Arc::new(numeric::impute(x, self.number(params, 0)?).map_err(named)?),
            Self::Log1p => Arc::new(numeric::log1p(x).map_err(named)?),
            Self::Clip => Arc::new(
                numeric::clip(x, self.number(params, 0)?, self.number(params, 1)?)
                    .map_err(named)?,
            ),
            Self::Bucketize => Arc::new(numeric::bucketize(x, &numbers(0)?).map_err(named)?),
            Self::OneHot => {
                self.width(params.len(), "words")?;
                Arc::new(categorical::one_hot(x, &words()?).map_err(named)?)
            }
            Self::OrdinalEncode => {
                Arc::new(categorical::ordinal_encode(x, &words()?).map_err(named)?)
            }
            Self::HashBucket => {
                Arc::new(categorical::hash_bucket(x, self.count(params, 0)? as u64).map_err(named)?)
            }
            Self::TokenCount => Arc::new(text::token_count(x).map_err(named)?),
            Self::HashedNgrams => {
                let buckets = self.width(self.count(params, 1)?, "buckets")?;
                Arc::new(text::hashed_ngrams(x, self.count(params, 0)?, buckets).map_err(named)?)
            }
            Self::RegexExtract => {
                let pattern = self.text(params, 0)?;
                let regex = regex::Regex::new(&pattern).map_err(|e| {
                    plan_datafusion_err!("regex_extract: invalid pattern '{pattern}': {e}")
                })?;
                let group = self.number(params, 1)?;
                if group < 0.0 || group.fract() != 0.0 {
                    return plan_err!("regex_extract: group must be a whole number >= 0");
                }
                Arc::new(text::regex_extract(x, &regex, group as usize).map_err(named)?)
            }
            // Decoding is the heaviest kernel: on the inference pool, with the runtime
            // thread handed off, as model runs are.
            Self::ImageTensor | Self::ImageTensorStrict => {
                let transform = self.image_transform(params)?;
                let strict = self == Self::ImageTensorStrict;
                Arc::new(
                    run_on_cpu_pool(|| image::image_tensor(x, &transform, strict))?
                        .map_err(named)?,
                )
            }
            Self::ImageError => {
                Arc::new(run_on_cpu_pool(|| image::image_errors(x))?.map_err(named)?)
            }
            Self::AudioTensor | Self::AudioTensorStrict => {
                let transform = self.audio_transform(params)?;
                let strict = self == Self::AudioTensorStrict;
                Arc::new(
                    run_on_cpu_pool(|| audio::audio_tensor(x, &transform, strict))?
                        .map_err(named)?,
                )
            }
            Self::AudioError => {
                Arc::new(run_on_cpu_pool(|| audio::audio_errors(x))?.map_err(named)?)
            }
            Self::TextError => Arc::new(text::text_errors(x).map_err(named)?),
            Self::AudioSpectrogram | Self::AudioSpectrogramStrict => {
                let (wave, spectrogram) = self.spectrogram(params)?;
                let strict = self == Self::AudioSpectrogramStrict;
                Arc::new(
                    run_on_cpu_pool(|| audio::audio_spectrogram(x, &wave, &spectrogram, strict))?
                        .map_err(named)?,
                )
            }
        };
        Ok(out)
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct FeatureUdf {
    function: FeatureFunction,
    signature: Signature,
}

impl FeatureUdf {
    pub fn new(function: FeatureFunction) -> Self {
        Self {
            function,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

/// Every feature function, for registering in a session.
pub fn feature_udfs() -> Vec<Arc<ScalarUDF>> {
    FeatureFunction::ALL
        .into_iter()
        .map(|f| Arc::new(ScalarUDF::new_from_impl(FeatureUdf::new(f))))
        .collect()
}

impl ScalarUDFImpl for FeatureUdf {
    fn name(&self) -> &str {
        self.function.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        Ok(arg_types.to_vec())
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        plan_err!(
            "{} derives its type from its constant parameters",
            self.name()
        )
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let params = args.scalar_arguments.get(1..).unwrap_or_default();
        self.function.check_arguments(args.arg_fields, params)?;
        let params: Vec<ScalarValue> = params.iter().flatten().map(|p| (*p).clone()).collect();
        let data_type = self.function.return_type(&params)?;
        let field = Field::new(self.name(), data_type, true);
        Ok(Arc::new(match self.function {
            // Arrow's canonical fixed-shape tensor: the list is the tensor, row-major.
            FeatureFunction::ImageTensor | FeatureFunction::ImageTensorStrict => {
                let shape = self.function.image_transform(&params)?.shape();
                tensor_field(self.name(), DataType::Float32, &shape, true)?
            }
            FeatureFunction::AudioTensor | FeatureFunction::AudioTensorStrict => {
                let samples = self.function.audio_transform(&params)?.samples;
                tensor_field(self.name(), DataType::Float32, &[samples], true)?
            }
            FeatureFunction::AudioSpectrogram | FeatureFunction::AudioSpectrogramStrict => {
                let shape = self.function.spectrogram(&params)?.1.shape();
                tensor_field(self.name(), DataType::Float32, &shape, true)?
            }
            _ => field,
        }))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let mut values = args.args.into_iter();
        let Some(column) = values.next() else {
            return plan_err!("{} takes {}", self.name(), self.function.usage());
        };
        let params = values
            .map(|v| match v {
                ColumnarValue::Scalar(s) => Ok(s),
                ColumnarValue::Array(_) => plan_err!(
                    "{}: parameters must be constants, as in {}",
                    self.name(),
                    self.function.usage()
                ),
            })
            .collect::<Result<Vec<_>>>()?;
        let x = column.to_array(rows)?;
        Ok(ColumnarValue::Array(self.function.apply(&x, &params)?))
    }
}
