//! Writes a trained model as an ONNX graph (MatMul, Add, Relu, Sigmoid, Concat, ArgMax;
//! opset 13), so `predict` and any ONNX runtime can use it.
//!
//! The input is `features`: float32 [N, d], in the columns' own units: the standardisation
//! used in training is folded into the first layer, and a regression target's scaling into
//! the last. A classifier outputs `label` int64 [N] and `probabilities` float32 [N, 2] (what
//! scikit-learn's converters write with zipmap off); a regressor `variable` float32 [N, 1].
//! Training metadata travels in the model's `metadata_props`.
//!
//! The protobuf messages are declared by hand with prost (as in `model::trees::proto`), for
//! the fields written here; numbers follow onnx.proto.

use super::network::{Architecture, Objective, Scaling};
use prost::Message;

#[derive(Clone, PartialEq, Message)]
struct ModelProto {
    #[prost(int64, tag = "1")]
    ir_version: i64,
    #[prost(string, tag = "2")]
    producer_name: String,
    #[prost(string, tag = "3")]
    producer_version: String,
    #[prost(int64, tag = "5")]
    model_version: i64,
    #[prost(string, tag = "6")]
    doc_string: String,
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "8")]
    opset_import: Vec<OperatorSetIdProto>,
    #[prost(message, repeated, tag = "14")]
    metadata_props: Vec<StringStringEntryProto>,
}

#[derive(Clone, PartialEq, Message)]
struct OperatorSetIdProto {
    #[prost(string, tag = "1")]
    domain: String,
    #[prost(int64, tag = "2")]
    version: i64,
}

#[derive(Clone, PartialEq, Message)]
struct StringStringEntryProto {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(string, tag = "2")]
    value: String,
}

#[derive(Clone, PartialEq, Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    node: Vec<NodeProto>,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<TensorProto>,
    #[prost(message, repeated, tag = "11")]
    input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    output: Vec<ValueInfoProto>,
}

#[derive(Clone, PartialEq, Message)]
struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    output: Vec<String>,
    #[prost(string, tag = "3")]
    name: String,
    #[prost(string, tag = "4")]
    op_type: String,
    #[prost(message, repeated, tag = "5")]
    attribute: Vec<AttributeProto>,
}

/// Values are `optional` so that 0 (e.g. keepdims = 0) is written, not taken as absent.
#[derive(Clone, PartialEq, Message)]
struct AttributeProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(int64, optional, tag = "3")]
    i: Option<i64>,
    /// AttributeType: INT = 2.
    #[prost(int32, tag = "20")]
    r#type: i32,
}

#[derive(Clone, PartialEq, Message)]
struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    dims: Vec<i64>,
    /// FLOAT = 1.
    #[prost(int32, tag = "2")]
    data_type: i32,
    #[prost(float, repeated, tag = "4")]
    float_data: Vec<f32>,
    #[prost(string, tag = "8")]
    name: String,
}

#[derive(Clone, PartialEq, Message)]
struct ValueInfoProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    r#type: Option<TypeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TypeProto {
    #[prost(message, optional, tag = "1")]
    tensor_type: Option<TensorTypeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorTypeProto {
    #[prost(int32, tag = "1")]
    elem_type: i32,
    #[prost(message, optional, tag = "2")]
    shape: Option<TensorShapeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    dim: Vec<Dimension>,
}

#[derive(Clone, PartialEq, Message)]
struct Dimension {
    #[prost(int64, optional, tag = "1")]
    dim_value: Option<i64>,
    #[prost(string, optional, tag = "2")]
    dim_param: Option<String>,
}

const FLOAT: i32 = 1;
const INT64: i32 = 7;

/// A trained network and how its inputs and output were scaled in training.
#[derive(Debug, Clone)]
pub struct ExportedModel<'a> {
    pub architecture: &'a Architecture,
    pub weights: &'a [f64],
    pub scaling: &'a Scaling,
    /// (key, value) pairs stored in the model's metadata.
    pub metadata: Vec<(String, String)>,
    pub version: i64,
}

fn tensor(name: &str, dims: Vec<i64>, values: Vec<f32>) -> TensorProto {
    TensorProto {
        dims,
        data_type: FLOAT,
        float_data: values,
        name: name.into(),
    }
}

fn node(op: &str, inputs: &[&str], output: &str, attributes: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: format!("{op}_{output}"),
        op_type: op.into(),
        attribute: attributes,
    }
}

fn int_attribute(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i: Some(value),
        r#type: 2,
    }
}

fn value_info(name: &str, elem_type: i32, dims: &[Option<i64>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| match d {
            Some(v) => Dimension {
                dim_value: Some(*v),
                dim_param: None,
            },
            None => Dimension {
                dim_value: None,
                dim_param: Some("N".into()),
            },
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type,
                shape: Some(TensorShapeProto { dim }),
            }),
        }),
    }
}

/// The layers in the inputs' own units: (W as [in, out] for MatMul, b).
fn unscaled_layers(model: &ExportedModel) -> Vec<(usize, usize, Vec<f64>, Vec<f64>)> {
    let layers = model.architecture.layers(model.weights);
    let count = layers.len();
    layers
        .into_iter()
        .enumerate()
        .map(|(l, (inputs, outputs, w, b))| {
            let mut transposed = vec![0.0; inputs * outputs];
            let mut bias = b.to_vec();
            for o in 0..outputs {
                for i in 0..inputs {
                    let mut weight = w[o * inputs + i];
                    if l == 0 {
                        // (x - mean) / std folded in: a constant feature (std 0) was fed
                        // as 0 in training, so it gets no weight.
                        let std = model.scaling.feature_std[i];
                        weight = if std > 0.0 { weight / std } else { 0.0 };
                        bias[o] -= weight * model.scaling.feature_mean[i];
                    }
                    transposed[i * outputs + o] = weight;
                }
            }
            if l == count - 1 && model.architecture.objective == Objective::Regression {
                transposed
                    .iter_mut()
                    .for_each(|w| *w *= model.scaling.target_std);
                bias.iter_mut()
                    .for_each(|b| *b = *b * model.scaling.target_std + model.scaling.target_mean);
            }
            (inputs, outputs, transposed, bias)
        })
        .collect()
}

/// A one-node graph, `doubled = x + x` over float32 [N, 1]: what a worker runs once on each
/// GPU it declares, to prove the device, its libraries and ONNX Runtime's provider work
/// together before it takes tasks.
pub fn probe_model() -> Vec<u8> {
    ModelProto {
        ir_version: 8,
        producer_name: "shoal".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        model_version: 1,
        doc_string: "shoal's device probe".into(),
        graph: Some(GraphProto {
            node: vec![node("Add", &["x", "x"], "doubled", vec![])],
            name: "shoal_probe".into(),
            initializer: vec![],
            input: vec![value_info("x", FLOAT, &[None, Some(1)])],
            output: vec![value_info("doubled", FLOAT, &[None, Some(1)])],
        }),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        metadata_props: vec![],
    }
    .encode_to_vec()
}

/// The model as ONNX bytes.
pub fn to_onnx(model: &ExportedModel) -> Vec<u8> {
    let d = model.architecture.inputs as i64;
    let mut nodes = Vec::new();
    let mut initializers = Vec::new();
    let mut current = "features".to_string();
    let layers = unscaled_layers(model);
    let last = layers.len() - 1;
    for (l, (inputs, outputs, w, b)) in layers.into_iter().enumerate() {
        let (w_name, b_name) = (format!("W{l}"), format!("B{l}"));
        initializers.push(tensor(
            &w_name,
            vec![inputs as i64, outputs as i64],
            w.iter().map(|v| *v as f32).collect(),
        ));
        initializers.push(tensor(
            &b_name,
            vec![outputs as i64],
            b.iter().map(|v| *v as f32).collect(),
        ));
        let product = format!("matmul{l}");
        nodes.push(node("MatMul", &[&current, &w_name], &product, vec![]));
        let sum = if l == last && model.architecture.objective == Objective::Regression {
            "variable".to_string()
        } else {
            format!("layer{l}")
        };
        nodes.push(node("Add", &[&product, &b_name], &sum, vec![]));
        current = if l == last {
            sum
        } else {
            let relu = format!("relu{l}");
            nodes.push(node("Relu", &[&sum], &relu, vec![]));
            relu
        };
    }
    let outputs = match model.architecture.objective {
        Objective::Regression => vec![value_info("variable", FLOAT, &[None, Some(1)])],
        Objective::Binary => {
            initializers.push(tensor("one", vec![1], vec![1.0]));
            nodes.push(node("Sigmoid", &[&current], "p_positive", vec![]));
            nodes.push(node("Sub", &["one", "p_positive"], "p_negative", vec![]));
            nodes.push(node(
                "Concat",
                &["p_negative", "p_positive"],
                "probabilities",
                vec![int_attribute("axis", 1)],
            ));
            nodes.push(node(
                "ArgMax",
                &["probabilities"],
                "label",
                vec![int_attribute("axis", 1), int_attribute("keepdims", 0)],
            ));
            vec![
                value_info("label", INT64, &[None]),
                value_info("probabilities", FLOAT, &[None, Some(2)]),
            ]
        }
    };
    let proto = ModelProto {
        ir_version: 8,
        producer_name: "shoal".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        model_version: model.version,
        doc_string: "trained by shoal (federated)".into(),
        graph: Some(GraphProto {
            node: nodes,
            name: "shoal_trained".into(),
            initializer: initializers,
            input: vec![value_info("features", FLOAT, &[None, Some(d)])],
            output: outputs,
        }),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        metadata_props: model
            .metadata
            .iter()
            .map(|(key, value)| StringStringEntryProto {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
    };
    proto.encode_to_vec()
}
