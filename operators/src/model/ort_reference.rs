//! What ONNX Runtime answers for a float [rows, width] input: the reference the native
//! evaluators are tested against, output by output.

use super::SessionPool;
use super::trees::NativeTensor;
use ort::value::TensorRef;

/// Every output of the model `bytes` (named `name` in errors) for `rows` rows of `x`.
pub fn ort_outputs(
    name: &str,
    bytes: &[u8],
    x: &[f32],
    rows: usize,
    width: usize,
) -> Vec<NativeTensor> {
    let mut session = SessionPool::build_session(name, bytes).expect("ORT session");
    let input = TensorRef::from_array_view(([rows, width], x)).expect("input tensor");
    let outputs = session.run(ort::inputs![input]).expect("ORT run");
    outputs
        .iter()
        .map(|(_, value)| {
            if let Ok((shape, data)) = value.try_extract_tensor::<f32>() {
                NativeTensor::Float32 {
                    dims: shape.iter().copied().collect(),
                    data: data.to_vec(),
                }
            } else {
                let (shape, data) = value.try_extract_tensor::<i64>().expect("f32 or i64");
                NativeTensor::Int64 {
                    dims: shape.iter().copied().collect(),
                    data: data.to_vec(),
                }
            }
        })
        .collect()
}
