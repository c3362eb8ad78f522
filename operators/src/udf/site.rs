//! `site()`: the name of the site (worker) a row is processed on, e.g. to compare models per
//! site: `SELECT site(), evaluate('auc', ...) FROM t GROUP BY site()`. Volatile, so the
//! planner never folds it on the coordinator: it is evaluated where the rows are read.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SiteUdf {
    site: String,
    signature: Signature,
}

impl SiteUdf {
    /// `site` is the worker's name ("coordinator" or "local" outside workers).
    pub fn new(site: &str) -> Self {
        Self {
            site: site.to_string(),
            signature: Signature::exact(vec![], Volatility::Volatile),
        }
    }
}

impl ScalarUDFImpl for SiteUdf {
    fn name(&self) -> &str {
        "site"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(
            self.site.clone(),
        ))))
    }
}
