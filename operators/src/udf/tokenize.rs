//! A model's tokenizer as SQL functions:
//!
//! ```text
//! tokenize(text, '<model>', max_tokens)
//!     -> struct<input_ids, attention_mask, token_type_ids>, each FixedSizeList<Int64, max_tokens>
//! text_chunks(text, '<model>', max_tokens, overlap) -> List<Utf8>
//! ```
//!
//! `predict('m', tokenize(text, 'm', 128))` feeds each field of the struct to the model
//! input of its name (see [`crate::model::feeds::by_input_name`]).
//! `SELECT unnest(text_chunks(content, 'm', 126, 16))` makes one row per piece of a long
//! document. The text is a string or bytes (a files table's `content`; bytes that are not
//! UTF-8 give a null). The tokenizer is the one the model carries
//! ([`crate::model::tokenizer`]), at the version the statement pinned.

use super::model_pins::Pins;
use crate::error::Error;
use crate::features::MAX_FEATURE_WIDTH;
use crate::features::tokens::{text_chunks, token_tensors, token_tensors_type};
use crate::model::{LoadedModel, ModelProvider};
use crate::runtime::run_on_cpu_pool;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue, internal_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// Most tokens a chunk may hold: a long-context model's window, with room.
const MAX_CHUNK_TOKENS: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TextFunction {
    Tokenize,
    TextChunks,
}

impl TextFunction {
    pub const ALL: [TextFunction; 2] = [Self::Tokenize, Self::TextChunks];

    pub fn name(self) -> &'static str {
        match self {
            Self::Tokenize => "tokenize",
            Self::TextChunks => "text_chunks",
        }
    }

    fn usage(self) -> &'static str {
        match self {
            Self::Tokenize => "tokenize(text, 'model', max_tokens)",
            Self::TextChunks => "text_chunks(text, 'model', max_tokens, overlap)",
        }
    }
}

/// The constants of one call, checked.
struct Call {
    model: String,
    max_tokens: usize,
    overlap: usize,
}

#[derive(Debug)]
pub struct TokenizerUdf {
    function: TextFunction,
    provider: Arc<dyn ModelProvider>,
    signature: Signature,
}

/// `tokenize` and `text_chunks` over one model provider.
pub fn text_udfs(provider: Arc<dyn ModelProvider>) -> Vec<Arc<ScalarUDF>> {
    TextFunction::ALL
        .into_iter()
        .map(|f| {
            Arc::new(ScalarUDF::new_from_impl(TokenizerUdf::new(
                f,
                provider.clone(),
            )))
        })
        .collect()
}

impl TokenizerUdf {
    pub fn new(function: TextFunction, provider: Arc<dyn ModelProvider>) -> Self {
        Self {
            function,
            provider,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }

    /// The model a call names, when it names one by a literal.
    pub fn model_of(args: &[datafusion::logical_expr::Expr]) -> Option<&str> {
        match args.get(1)? {
            datafusion::logical_expr::Expr::Literal(
                ScalarValue::Utf8(Some(name))
                | ScalarValue::Utf8View(Some(name))
                | ScalarValue::LargeUtf8(Some(name)),
                _,
            ) => Some(name.as_str()),
            _ => None,
        }
    }

    fn call(&self, fields: &[FieldRef], constants: &[Option<&ScalarValue>]) -> Result<Call> {
        let f = self.function;
        let wanted = match f {
            TextFunction::Tokenize => 3,
            TextFunction::TextChunks => 4,
        };
        if fields.len() != wanted {
            return plan_err!(
                "{} takes {}; got {} argument(s)",
                f.name(),
                f.usage(),
                fields.len()
            );
        }
        let text = match fields[0].data_type() {
            DataType::Dictionary(_, v) => v.as_ref(),
            t => t,
        };
        if !matches!(
            text,
            DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Binary
                | DataType::LargeBinary
                | DataType::BinaryView
                | DataType::Null
        ) {
            return plan_err!(
                "{}: column '{}' is {text}, expected text (or a file's bytes)",
                f.name(),
                fields[0].name()
            );
        }
        let Some(
            ScalarValue::Utf8(Some(model))
            | ScalarValue::Utf8View(Some(model))
            | ScalarValue::LargeUtf8(Some(model)),
        ) = constants.get(1).copied().flatten()
        else {
            return plan_err!(
                "{}: the model must be a string literal, as in {}",
                f.name(),
                f.usage()
            );
        };
        let whole = |i: usize, what: &str, least: u64, most: usize| -> Result<usize> {
            let value = constants
                .get(i)
                .copied()
                .flatten()
                .and_then(|v| v.cast_to(&DataType::UInt64).ok());
            match value {
                Some(ScalarValue::UInt64(Some(v))) if v >= least && v as usize <= most => {
                    Ok(v as usize)
                }
                _ => plan_err!(
                    "{}: {what} must be a whole number from {least} to {most}, as in {}",
                    f.name(),
                    f.usage()
                ),
            }
        };
        let max_tokens = match f {
            TextFunction::Tokenize => whole(2, "max_tokens", 1, MAX_FEATURE_WIDTH)?,
            TextFunction::TextChunks => whole(2, "max_tokens", 1, MAX_CHUNK_TOKENS)?,
        };
        let overlap = match f {
            TextFunction::Tokenize => 0,
            TextFunction::TextChunks => whole(3, "overlap", 0, max_tokens - 1)?,
        };
        Ok(Call {
            model: model.clone(),
            max_tokens,
            overlap,
        })
    }

    /// The model, which must carry a tokenizer.
    fn model(&self, name: &str, pinned: Option<&str>) -> Result<Arc<LoadedModel>> {
        let model = self.provider.model(name, pinned)?;
        if model.tokenizer.is_none() {
            return Err(Error::NoTokenizer {
                function: self.function.name().into(),
                model: name.into(),
            }
            .into());
        }
        Ok(model)
    }
}

impl PartialEq for TokenizerUdf {
    fn eq(&self, other: &Self) -> bool {
        self.function == other.function && Arc::ptr_eq(&self.provider, &other.provider)
    }
}

impl Eq for TokenizerUdf {}

impl Hash for TokenizerUdf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.function.hash(state);
    }
}

impl ScalarUDFImpl for TokenizerUdf {
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
        internal_err!("{} derives its type from its arguments", self.name())
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let call = self.call(args.arg_fields, args.scalar_arguments)?;
        self.model(&call.model, None)?;
        let data_type = match self.function {
            TextFunction::Tokenize => token_tensors_type(call.max_tokens),
            TextFunction::TextChunks => DataType::new_list(DataType::Utf8, false),
        };
        Ok(Arc::new(Field::new(self.name(), data_type, true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let constants: Vec<Option<&ScalarValue>> = args
            .args
            .iter()
            .map(|a| match a {
                ColumnarValue::Scalar(s) => Some(s),
                ColumnarValue::Array(_) => None,
            })
            .collect();
        let call = self.call(&args.arg_fields, &constants)?;
        let pins = Pins::from_config(&args.config_options)?;
        let model = self.model(
            &call.model,
            pins.versions.get(&call.model).map(String::as_str),
        )?;
        let text = args.args[0].to_array(args.number_rows)?;
        let function = self.function;
        let out = run_on_cpu_pool(move || -> Result<_> {
            let Some(tokenizer) = &model.tokenizer else {
                return internal_err!("checked above");
            };
            Ok(match function {
                TextFunction::Tokenize => {
                    let fixed = tokenizer.fixed_length(call.max_tokens).map_err(|message| {
                        Error::InvalidTokenizer {
                            model: call.model.clone(),
                            message,
                        }
                    })?;
                    Arc::new(token_tensors(&text, &fixed, call.max_tokens)?) as _
                }
                TextFunction::TextChunks => Arc::new(text_chunks(
                    &text,
                    tokenizer.plain(),
                    call.max_tokens,
                    call.overlap,
                )?) as _,
            })
        })??;
        Ok(ColumnarValue::Array(out))
    }
}
