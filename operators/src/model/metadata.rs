//! Properties carried inside a model's ONNX bytes (`ModelProto.metadata_props`): what
//! belongs to one version of a model and must travel with it (its tokenizer, the device kind
//! the registry pins it to). A model is pinned, shipped to workers and cached by the hash of
//! its bytes ([`super::content_hash`]); a file that travelled beside it could drift from the
//! version a statement pinned.

use prost::Message;

/// `ModelProto.metadata_props` (field 14 of onnx.proto): the only field read here.
#[derive(Clone, PartialEq, prost::Message)]
struct ModelMetadata {
    #[prost(message, repeated, tag = "14")]
    metadata_props: Vec<StringStringEntry>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StringStringEntry {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(string, tag = "2")]
    value: String,
}

/// `model` with `value` attached as its `key` property. A protobuf message's repeated field
/// may be continued anywhere in its bytes, so the entry is appended and the graph is not
/// re-encoded.
pub fn attach(model: &[u8], key: &str, value: &str) -> Vec<u8> {
    let entry = ModelMetadata {
        metadata_props: vec![StringStringEntry {
            key: key.into(),
            value: value.into(),
        }],
    };
    let mut bytes = model.to_vec();
    entry.encode(&mut bytes).ok();
    bytes
}

/// The value of property `key` in `model`'s bytes; the last entry wins, as in ONNX
/// Runtime's metadata map. Err: the bytes are not a protobuf message.
pub fn property(model: &[u8], key: &str) -> Result<Option<String>, prost::DecodeError> {
    Ok(ModelMetadata::decode(model)?
        .metadata_props
        .into_iter()
        .rev()
        .find(|p| p.key == key)
        .map(|p| p.value))
}
