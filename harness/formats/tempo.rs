//! Reading Tempo's trace-by-id responses in every shape it returns.
//!
//! Tempo's JSON is not OTLP/JSON: v1 (`/api/traces/<id>`) has `batches` instead of `resourceSpans`,
//! v2 wraps the trace in `trace`, and ids are base64 (or hex in older test data). The harness asks
//! for `application/protobuf` (v1: `tempopb.Trace{batches=1}`, wire-compatible with OTLP
//! `TracesData`), and the judge reads all three shapes so that downloaded artifacts from any version
//! can be judged.

use std::collections::BTreeMap;

use base64::{
    Engine, alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};
use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, any_value},
    trace::v1::TracesData,
};
use prost::Message;
use serde_json::Value;

/// A span reduced to what the checks need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanInfo {
    /// Trace id, lowercase hex.
    pub trace_id: String,
    /// `service.name` of the span's resource.
    pub service: String,
    /// Span name.
    pub name: String,
    /// String forms of the span's attributes.
    pub attributes: BTreeMap<String, String>,
}

/// Why a trace body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// Protobuf decoding failed.
    #[error("not an OTLP/Tempo protobuf trace: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// JSON decoding failed or had none of the known shapes.
    #[error("not a Tempo JSON trace: {0}")]
    Json(String),
}

/// The media type that asks Tempo's trace-by-id API for protobuf. Tempo 2.10.0 (the image of the
/// pinned chart 1.26.1, fixtures/images.yaml) documents it for both versions of the API
/// (grafana/tempo@v2.10.0 docs/sources/tempo/api_docs/_index.md: "OpenTelemetry proto if
/// `Accept: application/protobuf` is passed"); v1 then marshals a `tempopb.Trace`
/// (modules/frontend/combiner/trace_by_id.go: `proto.Marshal(traceResult)`) and answers with this
/// `Content-Type` (pkg/api/http.go `HeaderAcceptProtobuf`).
pub const PROTOBUF: &str = "application/protobuf";

/// The shapes a stored trace-by-id body comes in, each under its own file suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceFormat {
    /// `/api/traces/<id>` asked for [`PROTOBUF`]: what the collector stores.
    V1Protobuf,
    /// `/api/v2/traces/<id>` asked for [`PROTOBUF`].
    V2Protobuf,
    /// Any of Tempo's JSON shapes (run folders from before the collector asked for protobuf, or a
    /// Tempo that answered JSON anyway).
    Json,
}

impl TraceFormat {
    /// Every format, in the order a judge looks for the files.
    pub const ALL: [TraceFormat; 3] = [TraceFormat::V1Protobuf, TraceFormat::V2Protobuf, TraceFormat::Json];

    /// The file suffix: `traces/tempo/<id>.<suffix>`.
    pub fn suffix(self) -> &'static str {
        match self {
            TraceFormat::V1Protobuf => "pb",
            TraceFormat::V2Protobuf => "v2.pb",
            TraceFormat::Json => "json",
        }
    }

    /// The format of a v1 answer, by the `Content-Type` it came with.
    pub fn of_v1_answer(content_type: &str) -> TraceFormat {
        if content_type.trim_start().starts_with(PROTOBUF) { TraceFormat::V1Protobuf } else { TraceFormat::Json }
    }

    /// Decodes a body of this format.
    pub fn decode(self, body: &[u8]) -> Result<Vec<SpanInfo>, TraceError> {
        match self {
            TraceFormat::V1Protobuf => decode_v1_protobuf(body),
            TraceFormat::V2Protobuf => decode_v2_protobuf(body),
            TraceFormat::Json => decode_json(body),
        }
    }
}

/// Tempo v2 trace-by-id response: `TraceByIDResponse { Trace trace = 1; … }`.
#[derive(Clone, PartialEq, Message)]
struct TraceByIdResponse {
    #[prost(message, optional, tag = "1")]
    trace: Option<TracesData>,
}

/// Decodes a v1 protobuf body (`tempopb.Trace`).
pub fn decode_v1_protobuf(body: &[u8]) -> Result<Vec<SpanInfo>, TraceError> {
    Ok(from_traces_data(&TracesData::decode(body)?))
}

/// Decodes a v2 protobuf body (`tempopb.TraceByIDResponse`).
pub fn decode_v2_protobuf(body: &[u8]) -> Result<Vec<SpanInfo>, TraceError> {
    Ok(TraceByIdResponse::decode(body)?.trace.map(|t| from_traces_data(&t)).unwrap_or_default())
}

fn from_traces_data(data: &TracesData) -> Vec<SpanInfo> {
    let mut out = Vec::new();
    for rs in &data.resource_spans {
        let service = rs
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
            .and_then(|kv| kv.value.as_ref())
            .map(any_to_string)
            .unwrap_or_default();
        for ss in &rs.scope_spans {
            for span in &ss.spans {
                out.push(SpanInfo {
                    trace_id: hex(&span.trace_id),
                    service: service.clone(),
                    name: span.name.clone(),
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), kv.value.as_ref().map(any_to_string).unwrap_or_default()))
                        .collect(),
                });
            }
        }
    }
    out
}

fn any_to_string(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// Decodes any of Tempo's JSON shapes: v1 `batches`, v2 `trace.resourceSpans`, or plain OTLP
/// `resourceSpans`. v2's answer for an unknown id is 200 with `"trace": {}` (an empty
/// `tempopb.Trace`, its empty list omitted by jsonpb: grafana/tempo@v2.10.0
/// modules/frontend/combiner/trace_by_id_v2.go `traceResult = &tempopb.Trace{}`): no spans, not
/// an unreadable body.
pub fn decode_json(body: &[u8]) -> Result<Vec<SpanInfo>, TraceError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| TraceError::Json(e.to_string()))?;
    if v.get("trace").and_then(Value::as_object).is_some_and(|t| t.is_empty()) {
        return Ok(Vec::new());
    }
    let resource_spans = v
        .get("batches")
        .or_else(|| v.get("trace").and_then(|t| t.get("resourceSpans").or_else(|| t.get("batches"))))
        .or_else(|| v.get("resourceSpans"))
        .and_then(Value::as_array)
        .ok_or_else(|| TraceError::Json("no `batches`, `trace.resourceSpans` or `resourceSpans` array".into()))?;
    let mut out = Vec::new();
    for rs in resource_spans {
        let service = rs
            .pointer("/resource/attributes")
            .and_then(Value::as_array)
            .and_then(|attrs| attrs.iter().find(|a| a["key"] == "service.name"))
            .map(|a| json_any_to_string(&a["value"]))
            .unwrap_or_default();
        let scopes = rs.get("scopeSpans").or_else(|| rs.get("instrumentationLibrarySpans"));
        for ss in scopes.and_then(Value::as_array).into_iter().flatten() {
            for span in ss.get("spans").and_then(Value::as_array).into_iter().flatten() {
                let raw_id = span.get("traceId").and_then(Value::as_str).unwrap_or_default();
                out.push(SpanInfo {
                    trace_id: normalize_id(raw_id),
                    service: service.clone(),
                    name: span.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
                    attributes: span
                        .get("attributes")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .map(|a| (a["key"].as_str().unwrap_or_default().to_string(), json_any_to_string(&a["value"])))
                        .collect(),
                });
            }
        }
    }
    Ok(out)
}

fn json_any_to_string(v: &Value) -> String {
    for key in ["stringValue", "intValue", "boolValue", "doubleValue"] {
        if let Some(x) = v.get(key) {
            return match x {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
        }
    }
    String::new()
}

/// Base64 as Tempo's JSON writes `bytes` fields: gogo `jsonpb` (grafana/tempo@v2.10.0
/// pkg/tempopb/trace_utils.go `MarshalToJSONV1`) falls back to Go's `encoding/json`, which writes
/// `[]byte` in the standard alphabet, padded. Read with or without the padding.
const JSON_BYTES: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Turns a JSON trace id (hex in any case, or base64 of 16 bytes) into lowercase hex.
pub fn normalize_id(raw: &str) -> String {
    if raw.len() == 32 && raw.bytes().all(|b| b.is_ascii_hexdigit()) {
        return raw.to_ascii_lowercase();
    }
    match JSON_BYTES.decode(raw) {
        Ok(bytes) => hex(&bytes),
        Err(_) => raw.to_ascii_lowercase(),
    }
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_ids_become_hex() {
        assert_eq!(normalize_id("W47/95gDgQPSabYzgT/HAA=="), "5b8efff798038103d269b633813fc700");
        assert_eq!(normalize_id("5B8EFFF798038103D269B633813FC60C"), "5b8efff798038103d269b633813fc60c");
        assert_eq!(normalize_id("W47/95gDgQPSabYzgT/HAA"), "5b8efff798038103d269b633813fc700", "unpadded");
        assert_eq!(normalize_id("not base64!"), "not base64!", "left as it is");
    }

    #[test]
    fn an_answer_is_stored_in_the_format_its_content_type_names() {
        assert_eq!(TraceFormat::of_v1_answer("application/protobuf"), TraceFormat::V1Protobuf);
        assert_eq!(TraceFormat::of_v1_answer("application/protobuf; charset=utf-8"), TraceFormat::V1Protobuf);
        // A Tempo that ignores the Accept header answers JSON, which is stored as JSON.
        assert_eq!(TraceFormat::of_v1_answer("application/json"), TraceFormat::Json);
        assert_eq!(TraceFormat::of_v1_answer(""), TraceFormat::Json);
    }
}
