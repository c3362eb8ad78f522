//! A model's tokenizer: the Hugging Face `tokenizer.json` a transformer is exported with,
//! carried inside the model's ONNX bytes as the metadata property [`TOKENIZER_KEY`].
//!
//! Why inside the bytes: a model is pinned, shipped to workers and cached by the hash of its
//! bytes ([`super::content_hash`]); a tokenizer that travelled beside it could drift from the
//! version a statement pinned. The registry attaches a `<name>.tokenizer.json` it finds next
//! to `<name>.onnx` ([`attach`]), so an operator copies the two files a transformer export
//! gives and nothing else.
//!
//! Tokenisation is Hugging Face's own `tokenizers` crate (the code behind the Python
//! library and `transformers`' fast tokenizers), so ids equal theirs for the same file.

use crate::error::{Error, Result};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use tokenizers::{
    PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationDirection,
    TruncationParams, TruncationStrategy,
};

/// The metadata property of a model's ONNX bytes that holds its `tokenizer.json`.
pub const TOKENIZER_KEY: &str = "tokenizer.json";

/// `model` with `tokenizer_json` attached as its [`TOKENIZER_KEY`] property.
pub fn attach(model: &[u8], tokenizer_json: &str) -> Vec<u8> {
    super::metadata::attach(model, TOKENIZER_KEY, tokenizer_json)
}

/// A model's tokenizer, and its copies set up for each length a statement asked for.
#[derive(Debug)]
pub struct ModelTokenizer {
    base: Tokenizer,
    pad_id: u32,
    /// Copies that truncate and pad to a length, by length (few: one per `max_tokens` used).
    fixed: Mutex<HashMap<usize, Arc<Tokenizer>>>,
}

/// Most lengths kept set up per model: statements that ask for many lengths reuse none.
const MAX_FIXED_LENGTHS: usize = 16;

impl ModelTokenizer {
    /// The tokenizer in `model`'s bytes, if it carries one; an invalid one is an error
    /// naming the model, as an invalid graph is.
    pub fn embedded(model: &str, bytes: &[u8]) -> Result<Option<Self>> {
        let invalid = |message: String| Error::InvalidTokenizer {
            model: model.to_string(),
            message,
        };
        let Some(json) =
            super::metadata::property(bytes, TOKENIZER_KEY).map_err(|e| invalid(e.to_string()))?
        else {
            return Ok(None);
        };
        let base = Tokenizer::from_bytes(json.as_bytes()).map_err(|e| invalid(e.to_string()))?;
        let pad_id = pad_id(&base);
        Ok(Some(Self {
            base,
            pad_id,
            fixed: Mutex::new(HashMap::new()),
        }))
    }

    /// The tokenizer as the file has it: no truncation or padding (chunking).
    pub fn plain(&self) -> &Tokenizer {
        &self.base
    }

    /// A copy that truncates to `max_tokens` (special tokens included, as `transformers`
    /// does with `truncation=True, max_length=...`) and pads to exactly that length.
    pub fn fixed_length(&self, max_tokens: usize) -> std::result::Result<Arc<Tokenizer>, String> {
        if let Some(t) = self.fixed.lock().get(&max_tokens) {
            return Ok(t.clone());
        }
        let mut tokenizer = self.base.clone();
        tokenizer
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: max_tokens,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| e.to_string())?;
        let pad_token = self
            .base
            .id_to_token(self.pad_id)
            .unwrap_or_else(|| "[PAD]".into());
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(max_tokens),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id: self.pad_id,
            pad_type_id: 0,
            pad_token,
        }));
        let tokenizer = Arc::new(tokenizer);
        let mut fixed = self.fixed.lock();
        if fixed.len() >= MAX_FIXED_LENGTHS {
            fixed.clear();
        }
        fixed.insert(max_tokens, tokenizer.clone());
        Ok(tokenizer)
    }
}

/// The id padding uses: the file's own padding setting, else its pad token by the common
/// names, else 0 (the attention mask is 0 there, so a model does not see it).
fn pad_id(tokenizer: &Tokenizer) -> u32 {
    if let Some(p) = tokenizer.get_padding() {
        return p.pad_id;
    }
    ["[PAD]", "<pad>", "<|endoftext|>"]
        .iter()
        .find_map(|t| tokenizer.token_to_id(t))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::path::Path;

    fn files() -> (Vec<u8>, String) {
        let dir = Path::new("../tests/data/text/models");
        (
            std::fs::read(dir.join("review_sentiment.onnx")).unwrap(),
            std::fs::read_to_string(dir.join("review_sentiment.tokenizer.json")).unwrap(),
        )
    }

    #[test]
    fn an_attached_tokenizer_is_found_in_the_model_bytes_and_pads_to_a_length() {
        let (model, json) = files();
        assert!(ModelTokenizer::embedded("m", &model).unwrap().is_none());
        let with = attach(&model, &json);
        let tokenizer = ModelTokenizer::embedded("m", &with).unwrap().unwrap();
        assert_eq!(tokenizer.pad_id, 0, "[PAD]");
        let fixed = tokenizer.fixed_length(8).unwrap();
        let e = fixed
            .encode("the room was lovely and quite great", true)
            .unwrap();
        assert_eq!(e.get_ids().len(), 8);
        assert_eq!(
            e.get_ids()[0],
            tokenizer.plain().token_to_id("[CLS]").unwrap()
        );
        assert_eq!(
            e.get_ids()[7],
            tokenizer.plain().token_to_id("[SEP]").unwrap()
        );
        let short = fixed.encode("lovely", true).unwrap();
        assert_eq!(short.get_attention_mask(), [1, 1, 1, 0, 0, 0, 0, 0]);
        assert!(Arc::ptr_eq(&fixed, &tokenizer.fixed_length(8).unwrap()));
    }

    #[test]
    fn an_invalid_tokenizer_names_the_model() {
        let (model, _) = files();
        let err = ModelTokenizer::embedded("m", &attach(&model, "{not json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("'m'") && err.contains(TOKENIZER_KEY), "{err}");
    }
}
