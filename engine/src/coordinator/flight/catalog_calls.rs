//! The Flight SQL metadata calls clients make on connect (GetCatalogs, GetDbSchemas,
//! GetTables, GetTableTypes, GetSqlInfo), answered from a fresh session's catalog: the
//! site tables, `shoal.models` and the information schema.

use crate::coordinator::Coordinator;
use crate::error::Result;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, SqlInfo, SqlSupportedTransaction,
};
use datafusion::arrow::array::RecordBatch;
use std::sync::LazyLock;

/// Table types shoal reports: site tables are `TABLE`, system tables and the information
/// schema are `VIEW` (computed, read-only).
const TABLE_TYPES: [&str; 2] = ["TABLE", "VIEW"];

static SQL_INFO: LazyLock<Option<SqlInfoData>> = LazyLock::new(|| {
    let mut builder = SqlInfoDataBuilder::new();
    builder.append(SqlInfo::FlightSqlServerName, "shoal");
    builder.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    // The Arrow columnar format version (Schema.fbs MetadataVersion V5).
    builder.append(SqlInfo::FlightSqlServerArrowVersion, "1.5");
    builder.append(SqlInfo::FlightSqlServerReadOnly, true);
    builder.append(SqlInfo::FlightSqlServerSql, true);
    builder.append(SqlInfo::FlightSqlServerSubstrait, false);
    builder.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    builder.append(SqlInfo::FlightSqlServerCancel, true);
    builder.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    builder.append(SqlInfo::SqlDdlCatalog, false);
    builder.append(SqlInfo::SqlDdlSchema, false);
    builder.append(SqlInfo::SqlDdlTable, false);
    builder.build().ok()
});

/// Every (catalog, schema, table, type, arrow schema) the session can see.
async fn all_tables(
    coordinator: &Coordinator,
) -> Result<
    Vec<(
        String,
        String,
        String,
        &'static str,
        datafusion::arrow::datatypes::SchemaRef,
    )>,
> {
    let ctx = coordinator.sessions.session()?;
    let mut out = Vec::new();
    for catalog_name in ctx.catalog_names() {
        let Some(catalog) = ctx.catalog(&catalog_name) else {
            continue;
        };
        for schema_name in catalog.schema_names() {
            let Some(schema) = catalog.schema(&schema_name) else {
                continue;
            };
            let table_type = if schema_name == "public" {
                TABLE_TYPES[0]
            } else {
                TABLE_TYPES[1]
            };
            for table_name in schema.table_names() {
                if let Some(table) = schema.table(&table_name).await? {
                    out.push((
                        catalog_name.clone(),
                        schema_name.clone(),
                        table_name,
                        table_type,
                        table.schema(),
                    ));
                }
            }
        }
    }
    out.sort_by(|a, b| (&a.0, &a.1, &a.2).cmp(&(&b.0, &b.1, &b.2)));
    Ok(out)
}

pub fn catalogs(coordinator: &Coordinator, query: CommandGetCatalogs) -> Result<RecordBatch> {
    let ctx = coordinator.sessions.session()?;
    let mut builder = query.into_builder();
    let mut names = ctx.catalog_names();
    names.sort();
    for name in names {
        builder.append(name);
    }
    Ok(builder.build()?)
}

pub fn schemas(coordinator: &Coordinator, query: CommandGetDbSchemas) -> Result<RecordBatch> {
    let ctx = coordinator.sessions.session()?;
    // The builder applies the client's catalog and schema-pattern filters.
    let mut builder = query.into_builder();
    for catalog_name in ctx.catalog_names() {
        if let Some(catalog) = ctx.catalog(&catalog_name) {
            for schema_name in catalog.schema_names() {
                builder.append(&catalog_name, schema_name);
            }
        }
    }
    Ok(builder.build()?)
}

pub async fn tables(coordinator: &Coordinator, query: CommandGetTables) -> Result<RecordBatch> {
    let mut builder = query.into_builder();
    for (catalog, schema, table, table_type, arrow_schema) in all_tables(coordinator).await? {
        builder.append(catalog, schema, table, table_type, &arrow_schema)?;
    }
    Ok(builder.build()?)
}

pub fn table_types(query: CommandGetTableTypes) -> Result<RecordBatch> {
    let mut builder = query.into_builder();
    for table_type in TABLE_TYPES {
        builder.append(table_type);
    }
    Ok(builder.build()?)
}

pub fn sql_info(query: CommandGetSqlInfo) -> Result<RecordBatch> {
    let data = SQL_INFO.as_ref().ok_or_else(|| crate::Error::Malformed {
        what: "the server's SqlInfo table".into(),
        message: "it could not be built".into(),
    })?;
    Ok(query.into_builder(data).build()?)
}
