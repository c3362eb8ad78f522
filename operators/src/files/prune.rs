//! Skipping files before a scan is planned: filters that read only what the listing knows
//! (Hive partition values, or a files table's path, size and time) are evaluated once over
//! a batch of one row per file.

use datafusion::arrow::array::{Array, BooleanArray, RecordBatch};
use datafusion::catalog::Session;
use datafusion::common::{DFSchema, Result};
use datafusion::datasource::listing::helpers::expr_applicable_for_cols;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};

/// Whether `filter` reads only `columns`, with no volatile function (the check a
/// single-process ListingTable makes): then it can skip whole files.
pub fn reads_only(filter: &Expr, columns: &[&str]) -> bool {
    !filter.column_refs().is_empty() && expr_applicable_for_cols(columns, filter)
}

/// Which rows of `listing` (one per file) pass every filter. A filter that cannot be
/// evaluated over the listing alone keeps every file: DataFusion applies each filter to the
/// rows read anyway (Inexact), so pruning can only save work, never change an answer.
pub fn files_passing(
    state: &dyn Session,
    listing: &RecordBatch,
    filters: &[&Expr],
) -> Result<Vec<bool>> {
    let df_schema = DFSchema::try_from(listing.schema().as_ref().clone())?;
    let mut keep = vec![true; listing.num_rows()];
    for filter in filters {
        let Ok(mask) = state
            .create_physical_expr((*filter).clone(), &df_schema)
            .and_then(|p| p.evaluate(listing))
            .and_then(|v| v.into_array(listing.num_rows()))
        else {
            continue;
        };
        let Some(mask) = mask.as_any().downcast_ref::<BooleanArray>() else {
            continue;
        };
        for (i, kept) in keep.iter_mut().enumerate() {
            *kept &= mask.is_valid(i) && mask.value(i);
        }
    }
    Ok(keep)
}

/// What a table provider answers DataFusion for `filters`: the ones `prunes` accepts skip
/// files (Inexact: DataFusion still applies them to the rows read), the others are
/// DataFusion's alone.
pub fn pushdown(
    filters: &[&Expr],
    prunes: impl Fn(&Expr) -> bool,
) -> Vec<TableProviderFilterPushDown> {
    filters
        .iter()
        .map(|f| {
            if prunes(f) {
                TableProviderFilterPushDown::Inexact
            } else {
                TableProviderFilterPushDown::Unsupported
            }
        })
        .collect()
}
