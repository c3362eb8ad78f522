//! Typed access to a TreeEnsemble node's attributes, with errors that name the attribute.

use super::proto::{AttributeProto, NodeProto};

/// Why a graph is not evaluated natively: it then runs on ONNX Runtime, so this is a reason
/// logged at model load, never an error a user sees.
pub type Unsupported = String;

pub struct Attributes<'a> {
    node: &'a NodeProto,
}

impl<'a> Attributes<'a> {
    pub fn new(node: &'a NodeProto) -> Self {
        Self { node }
    }

    fn get(&self, name: &str) -> Option<&'a AttributeProto> {
        self.node.attribute.iter().find(|a| a.name == name)
    }

    pub fn ints(&self, name: &str) -> Vec<i64> {
        self.get(name).map(|a| a.ints.clone()).unwrap_or_default()
    }

    pub fn floats(&self, name: &str) -> Result<Vec<f32>, Unsupported> {
        // Double-precision `_as_tensor` thresholds and weights follow other rounding rules
        // in ONNX Runtime; such models stay on it.
        if self.get(&format!("{name}_as_tensor")).is_some() {
            return Err(format!("attribute '{name}_as_tensor' (double precision)"));
        }
        Ok(self.get(name).map(|a| a.floats.clone()).unwrap_or_default())
    }

    pub fn strings(&self, name: &str) -> Vec<String> {
        self.get(name)
            .map(|a| {
                a.strings
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn string_or(&self, name: &str, default: &str) -> String {
        self.get(name)
            .map(|a| String::from_utf8_lossy(&a.s).into_owned())
            .unwrap_or_else(|| default.to_string())
    }

    pub fn int_or(&self, name: &str, default: i64) -> i64 {
        self.get(name).map_or(default, |a| a.i)
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}
