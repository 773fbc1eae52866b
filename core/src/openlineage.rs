//! The lineage as OpenLineage run events (spec 2-0-2): one `COMPLETE` event per view, its job the view's SQL, its
//! inputs the tables it reads and its output the view, with the schema and column-lineage facets.
//!
//! Every table of a pipeline (a source's tables and the views) is a dataset in one namespace, `kappa:<title>`, so a
//! view read by another view is the same dataset as output and as input. A source's input dataset also carries the
//! `dataSource` facet with the file, object, topic or table it is read from.

use std::collections::BTreeMap;

use datafusion::arrow::datatypes::SchemaRef;
use serde_json::{Value, json};

use crate::engine::Snapshot;
use crate::lineage::transform_subtype;
use crate::pipeline::ViewMode;

/// The schema of the run events.
pub const RUN_EVENT_SCHEMA: &str =
    "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";
const SCHEMA_FACET: &str =
    "https://openlineage.io/spec/facets/1-2-0/SchemaDatasetFacet.json#/$defs/SchemaDatasetFacet";
const COLUMN_LINEAGE_FACET: &str = "https://openlineage.io/spec/facets/1-2-0/ColumnLineageDatasetFacet.json#/$defs/ColumnLineageDatasetFacet";
const SQL_FACET: &str =
    "https://openlineage.io/spec/facets/1-1-0/SQLJobFacet.json#/$defs/SQLJobFacet";
const JOB_TYPE_FACET: &str =
    "https://openlineage.io/spec/facets/2-0-4/JobTypeJobFacet.json#/$defs/JobTypeJobFacet";
const DATA_SOURCE_FACET: &str = "https://openlineage.io/spec/facets/1-0-1/DatasourceDatasetFacet.json#/$defs/DatasourceDatasetFacet";

/// Who wrote the events: Kappa and its version.
#[must_use]
pub fn producer() -> String {
    format!(
        "{}/tree/v{}",
        env!("CARGO_PKG_REPOSITORY"),
        env!("CARGO_PKG_VERSION")
    )
}

/// The time now, as the events give it (RFC 3339, UTC, milliseconds).
#[must_use]
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The namespace of every dataset and job of the pipeline.
#[must_use]
pub fn namespace(snapshot: &Snapshot) -> String {
    format!("kappa:{}", snapshot.title)
}

/// One run event per view, in pipeline order. `event_time` is an RFC 3339 time.
#[must_use]
pub fn run_events(snapshot: &Snapshot, event_time: &str) -> Vec<Value> {
    let producer = producer();
    let namespace = namespace(snapshot);
    let facet = |schema_url: &str| {
        let mut map = serde_json::Map::new();
        map.insert("_producer".into(), Value::String(producer.clone()));
        map.insert("_schemaURL".into(), Value::String(schema_url.to_owned()));
        map
    };
    let schemas: BTreeMap<&str, &SchemaRef> = snapshot
        .sources
        .iter()
        .filter_map(|s| s.schema.as_ref().map(|schema| (s.name.as_str(), schema)))
        .chain(
            snapshot
                .views
                .iter()
                .filter_map(|v| v.schema.as_ref().map(|schema| (v.name.as_str(), schema))),
        )
        .collect();
    let schema_facet = |table: &str| {
        schemas.get(table).map(|schema| {
            let mut map = facet(SCHEMA_FACET);
            let fields: Vec<Value> = schema
                .fields()
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    json!({
                        "name": f.name(),
                        "type": f.data_type().to_string(),
                        "ordinal_position": i + 1,
                    })
                })
                .collect();
            map.insert("fields".into(), Value::Array(fields));
            Value::Object(map)
        })
    };
    let mut events = Vec::new();
    for view in &snapshot.views {
        let inputs: Vec<Value> = snapshot
            .lineage
            .edges
            .iter()
            .filter(|e| e.to == view.name)
            .map(|edge| {
                let mut facets = serde_json::Map::new();
                if let Some(schema) = schema_facet(&edge.from) {
                    facets.insert("schema".into(), schema);
                }
                let source = snapshot.sources.iter().find(|s| {
                    edge.from == s.name
                        || edge
                            .from
                            .strip_prefix(&s.name)
                            .is_some_and(|r| r.starts_with("__"))
                });
                if let Some(source) = source {
                    let mut data_source = facet(DATA_SOURCE_FACET);
                    data_source.insert("name".into(), Value::String(source.name.clone()));
                    data_source.insert("uri".into(), Value::String(source_uri(source)));
                    facets.insert("dataSource".into(), Value::Object(data_source));
                }
                json!({ "namespace": namespace, "name": edge.from, "facets": facets })
            })
            .collect();
        let mut fields = serde_json::Map::new();
        for column in snapshot
            .lineage
            .columns
            .iter()
            .filter(|c| c.view == view.name)
        {
            let input_fields: Vec<Value> = column
                .inputs
                .iter()
                .map(|input| {
                    let mut transformation = json!({
                        "type": "DIRECT",
                        "subtype": transform_subtype(input.transform.kind),
                    });
                    if input.transform.masking {
                        transformation["masking"] = Value::Bool(true);
                    }
                    json!({
                        "namespace": namespace,
                        "name": input.table,
                        "field": input.column,
                        "transformations": [transformation],
                    })
                })
                .collect();
            fields.insert(
                column.column.clone(),
                json!({ "inputFields": input_fields }),
            );
        }
        let mut output_facets = serde_json::Map::new();
        if let Some(schema) = schema_facet(&view.name) {
            output_facets.insert("schema".into(), schema);
        }
        let mut column_lineage = facet(COLUMN_LINEAGE_FACET);
        column_lineage.insert("fields".into(), Value::Object(fields));
        output_facets.insert("columnLineage".into(), Value::Object(column_lineage));
        let mut sql = facet(SQL_FACET);
        sql.insert("query".into(), Value::String(view.sql.clone()));
        sql.insert("dialect".into(), Value::String("datafusion".into()));
        let mut job_type = facet(JOB_TYPE_FACET);
        job_type.insert(
            "processingType".into(),
            Value::String(
                if view.mode == ViewMode::Materialized {
                    "STREAMING"
                } else {
                    "BATCH"
                }
                .into(),
            ),
        );
        job_type.insert("integration".into(), Value::String("KAPPA".into()));
        job_type.insert("jobType".into(), Value::String("QUERY".into()));
        events.push(json!({
            "eventType": "COMPLETE",
            "eventTime": event_time,
            "producer": producer,
            "schemaURL": RUN_EVENT_SCHEMA,
            "run": { "runId": uuid::Uuid::new_v4().to_string() },
            "job": {
                "namespace": namespace,
                "name": view.name,
                "facets": { "sql": sql, "jobType": job_type },
            },
            "inputs": inputs,
            "outputs": [{ "namespace": namespace, "name": view.name, "facets": output_facets }],
        }));
    }
    events
}

/// Where a source is read from, as a URI (a file's absolute path as `file://`, or the remote URL as written).
fn source_uri(source: &crate::engine::SourceState) -> String {
    if let Some(remote) = &source.remote {
        return remote.url.clone();
    }
    let written = source.path_as_written.to_string_lossy();
    if written.contains("://") {
        return written.into_owned();
    }
    let path = std::path::absolute(&source.path).unwrap_or_else(|_| source.path.clone());
    format!("file://{}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lineage::TransformKind;

    #[test]
    fn the_subtypes_are_the_specs_words() {
        assert_eq!(transform_subtype(TransformKind::Identity), "IDENTITY");
        assert_eq!(
            transform_subtype(TransformKind::Transformation),
            "TRANSFORMATION"
        );
        assert_eq!(transform_subtype(TransformKind::Aggregation), "AGGREGATION");
    }
}
