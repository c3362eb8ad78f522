//! Plan nodes that stand in for the node they wrap: a worker adds them around a scan (to
//! yield), an aggregate (to count its groups) or a fragment's root (to audit what it sends),
//! and each must present itself as the node it wraps (same name, properties, children and
//! expressions). datafusion-distributed matches a worker's metrics to the coordinator's plan
//! by position in the tree, so the worker's plan keeps the coordinator's shape.
//!
//! The forwarding is written once here, for every stand-in:
//! [`stand_in_for!`](crate::stand_in_for) in its `ExecutionPlan` impl,
//! [`display_as_stood_in!`](crate::display_as_stood_in) for its `DisplayAs`, and
//! [`inner_with_children`] in its `with_new_children`.

use datafusion::error::Result;
use datafusion::physical_plan::{ChildrenPropertiesMode, ExecutionPlan, ReplaceChildrenOptions};
use std::sync::Arc;

/// `inner` over new `children` (its properties recomputed): what a stand-in's
/// `with_new_children` wraps again.
pub fn inner_with_children(
    inner: &Arc<dyn ExecutionPlan>,
    children: Vec<Arc<dyn ExecutionPlan>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    inner.clone().replace_children(
        children,
        ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
    )
}

/// The `ExecutionPlan` methods a stand-in forwards to the node in its field `$inner`: name,
/// properties, children and expressions. The stand-in writes `with_new_children`,
/// `execute` and, if it adds any, `metrics`.
#[macro_export]
macro_rules! stand_in_for {
    ($inner:ident) => {
        fn name(&self) -> &str {
            ::datafusion::physical_plan::ExecutionPlan::name(self.$inner.as_ref())
        }

        fn properties(&self) -> &::std::sync::Arc<::datafusion::physical_plan::PlanProperties> {
            ::datafusion::physical_plan::ExecutionPlan::properties(self.$inner.as_ref())
        }

        fn children(
            &self,
        ) -> ::std::vec::Vec<&::std::sync::Arc<dyn ::datafusion::physical_plan::ExecutionPlan>> {
            ::datafusion::physical_plan::ExecutionPlan::children(self.$inner.as_ref())
        }

        fn apply_expressions(
            &self,
            f: &mut dyn FnMut(
                &::std::sync::Arc<dyn ::datafusion::physical_expr::PhysicalExpr>,
            ) -> ::datafusion::error::Result<
                ::datafusion::common::tree_node::TreeNodeRecursion,
            >,
        ) -> ::datafusion::error::Result<::datafusion::common::tree_node::TreeNodeRecursion> {
            ::datafusion::physical_plan::ExecutionPlan::apply_expressions(self.$inner.as_ref(), f)
        }
    };
}

/// `DisplayAs` for stand-in `$ty`: it displays as the node in its field `$inner`.
#[macro_export]
macro_rules! display_as_stood_in {
    ($ty:ty, $inner:ident) => {
        impl ::datafusion::physical_plan::DisplayAs for $ty {
            fn fmt_as(
                &self,
                t: ::datafusion::physical_plan::DisplayFormatType,
                f: &mut ::std::fmt::Formatter,
            ) -> ::std::fmt::Result {
                ::datafusion::physical_plan::DisplayAs::fmt_as(self.$inner.as_ref(), t, f)
            }
        }
    };
}
