//! Which argument of a `predict` call feeds which input of the model, and in what shape.
//!
//! Decided from the arguments' Arrow fields: while planning, so a call that cannot feed the
//! model fails before any batch is read, and again for each batch (the fields are the
//! plan's, so the answer is the same). A tensor argument's per-row shape fills the model's
//! dynamic dimensions (a text classifier declared `[N, 3, ?, ?]` runs on `[3, 48, 192]`
//! tensors); its fixed ones must agree.

use super::signature::{InputLayout, ModelSignature, TensorElem, TensorSpec};
use crate::error::{Error, Result};
use crate::features::is_numeric_feature;
use crate::features::tensor::row_shape;
use datafusion::arrow::array::{ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, FieldRef};

/// How the arguments reach the graph's inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feeds {
    /// The arguments are numeric columns stacked into the one input's [N, width] matrix;
    /// otherwise argument i is input i's tensor.
    pub stack_columns: bool,
    /// Each input's dimensions after the batch one, dynamic ones resolved.
    pub dims: Vec<Vec<usize>>,
}

/// What one model run's inputs may take. ONNX Runtime's intermediate tensors grow with the
/// rows of a run (a ResNet's first layer holds 64 x 112 x 112 floats per image, 3.2 MB), so
/// rows with large tensors are scored in runs of fewer rows: 16 MiB is 27 images at
/// 224 x 224, a batch a CNN runs as fast per image as a larger one.
pub const RUN_INPUT_BYTES: usize = 16 << 20;

impl Feeds {
    /// The most rows one model run takes: [`RUN_INPUT_BYTES`] of inputs (tabular rows are
    /// never split: a few numbers a row make millions of rows).
    pub fn rows_per_run(&self) -> usize {
        // Every input element type is at most 8 bytes; float32 (4) is the common one.
        let values: usize = self.dims.iter().map(|d| d.iter().product::<usize>()).sum();
        (RUN_INPUT_BYTES / (values * 4).max(1)).max(1)
    }
}

/// Where a call went wrong, for the error it becomes.
pub struct Call<'a> {
    pub function: &'a str,
    pub model: &'a str,
}

impl Call<'_> {
    fn count(&self, expected: usize, found: usize) -> Error {
        Error::FeatureCount {
            function: self.function.into(),
            model: self.model.into(),
            expected,
            found,
        }
    }

    fn refuse(&self, position: usize, field: &FieldRef, input: &str, reason: String) -> Error {
        Error::TensorFeed {
            call: format!("{}('{}', ...)", self.function, self.model),
            argument: format!("argument {} ({})", position + 1, field.name()),
            input: input.into(),
            reason,
        }
    }
}

/// The feeds of a call with `args` (the feature arguments, after the model name).
pub fn plan_feeds(signature: &ModelSignature, call: &Call<'_>, args: &[FieldRef]) -> Result<Feeds> {
    match signature.layout {
        InputLayout::Stacked { width, .. } => stacked(signature, call, args, width),
        InputLayout::PerInput { count } => {
            if args.len() != count {
                return Err(call.count(count, args.len()));
            }
            let dims = signature
                .inputs
                .iter()
                .zip(args)
                .enumerate()
                .map(|(i, (spec, field))| one_input(call, i, spec, field))
                .collect::<Result<_>>()?;
            Ok(Feeds {
                stack_columns: false,
                dims,
            })
        }
    }
}

/// The columns a call feeds the model: its arguments, or, where the one argument is a
/// struct (`tokenize`'s `input_ids`, `attention_mask`, `token_type_ids`), the struct's
/// fields that the model's inputs are named after, in the order of the inputs; fields no
/// input takes (`token_type_ids` for most models) are left out.
#[derive(Debug, Clone)]
pub struct FedColumns {
    pub fields: Vec<FieldRef>,
    /// The struct fields taken, by position; None when the arguments are fed as they are.
    picks: Option<Vec<usize>>,
}

impl FedColumns {
    pub fn of(signature: &ModelSignature, call: &Call<'_>, args: &[FieldRef]) -> Result<Self> {
        let [only] = args else {
            return Ok(Self::as_given(args));
        };
        let DataType::Struct(children) = only.data_type() else {
            return Ok(Self::as_given(args));
        };
        let picks = signature
            .inputs
            .iter()
            .map(|input| {
                children
                    .iter()
                    .position(|c| c.name() == &input.name)
                    .ok_or_else(|| {
                        let names: Vec<&str> = children.iter().map(|c| c.name().as_str()).collect();
                        call.refuse(
                            0,
                            only,
                            &input.name,
                            format!(
                                "a struct argument feeds each input the field of its name, and \
                                 it has no field '{}' (its fields: {})",
                                input.name,
                                names.join(", ")
                            ),
                        )
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let fields = picks.iter().map(|i| children[*i].clone()).collect();
        Ok(Self {
            fields,
            picks: Some(picks),
        })
    }

    fn as_given(args: &[FieldRef]) -> Self {
        Self {
            fields: args.to_vec(),
            picks: None,
        }
    }

    /// The arrays to feed, from the arguments' arrays.
    pub fn arrays(&self, args: Vec<ArrayRef>) -> Result<Vec<ArrayRef>> {
        let Some(picks) = &self.picks else {
            return Ok(args);
        };
        let Some(strukt) = args.first().and_then(|a| a.as_struct_opt()) else {
            return Err(Error::Arrow(
                datafusion::arrow::error::ArrowError::InvalidArgumentError(
                    "a struct argument was planned; the batch holds another type".into(),
                ),
            ));
        };
        Ok(picks.iter().map(|i| strukt.column(*i).clone()).collect())
    }
}

/// The feeds the coordinator planned for this model (`shoal.models.tensor_shapes`) that
/// fit these arguments: as many, each holding as many values per row. A worker's copy of
/// the plan has lost the arguments' shape tags, so it cannot plan them itself; the values
/// are still counted per batch, and ONNX Runtime checks the shapes against the model.
pub fn planned_feeds(planned: &[Vec<Vec<usize>>], args: &[FieldRef]) -> Option<Feeds> {
    let widths: Vec<usize> = args
        .iter()
        .map(|f| {
            row_shape(f)
                .ok()
                .flatten()
                .map_or(1, |s| s.iter().product())
        })
        .collect();
    planned
        .iter()
        .find(|dims| {
            dims.len() == widths.len()
                && dims
                    .iter()
                    .zip(&widths)
                    .all(|(d, w)| d.iter().product::<usize>() == *w)
        })
        .map(|dims| Feeds {
            stack_columns: false,
            dims: dims.clone(),
        })
}

/// One [N, width] input: `width` numeric columns, or one tensor column of `width` values.
fn stacked(
    signature: &ModelSignature,
    call: &Call<'_>,
    args: &[FieldRef],
    width: usize,
) -> Result<Feeds> {
    let input = &signature.inputs[0].name;
    if let [field] = args
        && let Some(shape) = row_shape(field).map_err(|r| call.refuse(0, field, input, r))?
    {
        let values: usize = shape.iter().product();
        if values != width {
            return Err(call.refuse(
                0,
                field,
                input,
                format!("the model takes {width} values per row; the argument's tensors {shape:?} hold {values}"),
            ));
        }
        return Ok(Feeds {
            stack_columns: false,
            dims: vec![vec![width]],
        });
    }
    if args.len() != width {
        return Err(call.count(width, args.len()));
    }
    check_numeric(call, args)?;
    Ok(Feeds {
        stack_columns: true,
        dims: vec![vec![width]],
    })
}

fn check_numeric(call: &Call<'_>, args: &[FieldRef]) -> Result<()> {
    match args
        .iter()
        .enumerate()
        .find(|(_, f)| !is_numeric_feature(f.data_type()))
    {
        Some((i, field)) => Err(Error::FeatureType {
            function: call.function.into(),
            model: call.model.into(),
            position: i + 1,
            column: field.name().clone(),
            found: field.data_type().to_string(),
        }),
        None => Ok(()),
    }
}

/// The dimensions after N with which argument `position` feeds input `spec`.
fn one_input(
    call: &Call<'_>,
    position: usize,
    spec: &TensorSpec,
    field: &FieldRef,
) -> Result<Vec<usize>> {
    let refuse = |reason: String| call.refuse(position, field, &spec.name, reason);
    let Some((_, wanted)) = spec.shape.split_first() else {
        return Err(refuse(
            "the input has no batch dimension; export the model with a leading batch axis".into(),
        ));
    };
    let shape = row_shape(field).map_err(refuse)?;
    let Some(shape) = shape else {
        // A scalar column: one value per row, for an [N] or [N, 1] input.
        check_numeric(call, std::slice::from_ref(field)).map_err(|_| {
            refuse(format!(
                "it is {}; the input takes numbers (or a tensor column)",
                field.data_type()
            ))
        })?;
        return match wanted {
            [] => Ok(vec![]),
            [d] if *d == 1 || *d < 0 => Ok(vec![1]),
            _ => Err(refuse(format!(
                "the input takes {} per row; pass a tensor column (a FixedSizeList, such as \
                 image_tensor's result) of that shape",
                describe(wanted)
            ))),
        };
    };
    if matches!(spec.elem, TensorElem::String | TensorElem::Other) {
        return Err(refuse(format!("the input takes {} values", spec.elem)));
    }
    if wanted.len() == shape.len() {
        let agrees = wanted
            .iter()
            .zip(&shape)
            .all(|(w, s)| *w < 0 || *w as usize == *s);
        if agrees {
            return Ok(shape);
        }
    } else if wanted.iter().all(|w| *w > 0) {
        // A flat list of the right number of values fills a fixed shape in row-major order.
        let fixed: Vec<usize> = wanted.iter().map(|w| *w as usize).collect();
        if fixed.iter().product::<usize>() == shape.iter().product::<usize>() {
            return Ok(fixed);
        }
    }
    Err(refuse(format!(
        "the input takes {} per row; the argument's tensors are {shape:?}",
        describe(wanted)
    )))
}

/// `[3, ?, ?]`: a model's per-row dimensions, `?` where dynamic.
fn describe(dims: &[i64]) -> String {
    let parts: Vec<String> = dims
        .iter()
        .map(|d| if *d < 0 { "?".into() } else { d.to_string() })
        .collect();
    format!("[{}]", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::tensor::tensor_field;
    use crate::model::OutputSpec;
    use datafusion::arrow::datatypes::{DataType, Field};
    use std::sync::Arc;

    fn model(inputs: &[(&str, TensorElem, &[i64])]) -> ModelSignature {
        let inputs: Vec<TensorSpec> = inputs
            .iter()
            .map(|(name, elem, shape)| TensorSpec {
                name: name.to_string(),
                elem: *elem,
                shape: shape.to_vec(),
            })
            .collect();
        let layout = match inputs.as_slice() {
            [only] if only.shape.len() == 2 && only.shape[1] > 1 => InputLayout::Stacked {
                width: only.shape[1] as usize,
                elem: only.elem,
            },
            many => InputLayout::PerInput { count: many.len() },
        };
        ModelSignature {
            name: "m".into(),
            inputs,
            outputs: vec![OutputSpec::Unsupported {
                name: "y".into(),
                kind: "test".into(),
            }],
            layout,
        }
    }

    const CALL: Call<'static> = Call {
        function: "predict",
        model: "m",
    };

    fn column(name: &str, data_type: DataType) -> FieldRef {
        Arc::new(Field::new(name, data_type, false))
    }

    fn image(shape: &[usize]) -> FieldRef {
        Arc::new(tensor_field("img", DataType::Float32, shape, true).unwrap())
    }

    #[test]
    fn image_rows_are_scored_in_runs_of_a_few_dozen_and_tabular_rows_whole() {
        let images = Feeds {
            stack_columns: false,
            dims: vec![vec![3, 224, 224]],
        };
        assert_eq!(images.rows_per_run(), 27);
        let tabular = Feeds {
            stack_columns: true,
            dims: vec![vec![4]],
        };
        assert!(tabular.rows_per_run() > 1_000_000);
    }

    #[test]
    fn an_image_tensor_fills_the_dynamic_dimensions_of_a_vision_input() {
        let cls = model(&[("x", TensorElem::Float32, &[-1, 3, -1, -1])]);
        let feeds = plan_feeds(&cls, &CALL, &[image(&[3, 48, 192])]).unwrap();
        assert_eq!(feeds.dims, vec![vec![3, 48, 192]]);
        assert!(!feeds.stack_columns);
        let wrong = plan_feeds(&cls, &CALL, &[image(&[48, 192, 3])]).unwrap_err();
        assert!(
            wrong.to_string().contains("input 'x'")
                && wrong.to_string().contains("[3, ?, ?] per row")
                && wrong.to_string().contains("[48, 192, 3]"),
            "{wrong}"
        );
        let scalar = plan_feeds(&cls, &CALL, &[column("f", DataType::Float64)]).unwrap_err();
        assert!(
            scalar.to_string().contains("pass a tensor column"),
            "{scalar}"
        );
    }

    #[test]
    fn a_flat_list_of_the_right_size_fills_a_fixed_shape() {
        let fixed = model(&[("x", TensorElem::Float32, &[-1, 2, 3])]);
        let flat = column(
            "v",
            DataType::new_fixed_size_list(DataType::Float32, 6, false),
        );
        assert_eq!(
            plan_feeds(&fixed, &CALL, &[flat]).unwrap().dims,
            vec![vec![2, 3]]
        );
        let short = column(
            "v",
            DataType::new_fixed_size_list(DataType::Float32, 5, false),
        );
        assert!(plan_feeds(&fixed, &CALL, &[short]).is_err());
    }

    #[test]
    fn several_inputs_take_one_argument_each() {
        let two = model(&[
            ("ids", TensorElem::Int64, &[-1, -1]),
            ("age", TensorElem::Float32, &[-1, 1]),
        ]);
        let ids = column(
            "ids",
            DataType::new_fixed_size_list(DataType::Int64, 16, false),
        );
        let feeds =
            plan_feeds(&two, &CALL, &[ids.clone(), column("age", DataType::Int32)]).unwrap();
        assert_eq!(feeds.dims, vec![vec![16], vec![1]]);
        let count = plan_feeds(&two, &CALL, &[ids]).unwrap_err();
        assert!(
            count.to_string().contains("expects 2 feature(s), got 1"),
            "{count}"
        );
    }

    #[test]
    fn a_stacked_model_takes_columns_or_one_tensor_of_its_width() {
        let mlp = model(&[("x", TensorElem::Float32, &[-1, 4])]);
        let cols: Vec<FieldRef> = (0..4)
            .map(|i| column(&format!("f{i}"), DataType::Int32))
            .collect();
        assert!(plan_feeds(&mlp, &CALL, &cols).unwrap().stack_columns);
        let vector = image(&[2, 2]);
        assert!(!plan_feeds(&mlp, &CALL, &[vector]).unwrap().stack_columns);
        let text = column("s", DataType::Utf8);
        let err = plan_feeds(
            &mlp,
            &CALL,
            &[cols[0].clone(), cols[1].clone(), cols[2].clone(), text],
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("features must be numeric"),
            "{err}"
        );
    }
}
