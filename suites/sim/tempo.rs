//! Tempo: the spans it holds and its trace-by-id API (JSON or OTLP protobuf).

use base64::Engine;
use serde_json::{Value, json};

/// One span as the gateway reports it to Tempo.
#[derive(Debug, Clone)]
pub struct Span {
    pub service: String,
    pub name: String,
    pub span_id: [u8; 8],
    pub parent: [u8; 8],
    pub start_ns: u64,
    pub attributes: Vec<(String, String)>,
}

pub(super) fn tempo_json(id: &str, spans: &[Span]) -> Value {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let trace_id: Vec<u8> = (0..16).map(|i| u8::from_str_radix(&id[2 * i..2 * i + 2], 16).unwrap_or(0)).collect();
    let batches: Vec<Value> = spans
        .iter()
        .map(|sp| json!({
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": sp.service}}]},
            "scopeSpans": [{"scope": {"name": "envoy"}, "spans": [{
                "traceId": b64(&trace_id), "spanId": b64(&sp.span_id), "parentSpanId": b64(&sp.parent),
                "name": sp.name, "kind": "SPAN_KIND_SERVER",
                "startTimeUnixNano": sp.start_ns.to_string(), "endTimeUnixNano": (sp.start_ns + 4_000_000).to_string(),
                "attributes": sp.attributes.iter().map(|(k, v)| json!({"key": k, "value": {"stringValue": v}})).collect::<Vec<_>>(),
                "status": {},
            }]}],
        }))
        .collect();
    json!({"batches": batches})
}

pub(super) fn tempo_protobuf(id: &str, spans: &[Span]) -> Vec<u8> {
    use opentelemetry_proto::tonic::{
        common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
        resource::v1::Resource,
        trace::v1::{ResourceSpans, ScopeSpans, Span as PSpan, TracesData, span::SpanKind},
    };
    use prost::Message;
    let kv = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
        ..Default::default()
    };
    let trace_id: Vec<u8> = (0..16).map(|i| u8::from_str_radix(&id[2 * i..2 * i + 2], 16).unwrap_or(0)).collect();
    TracesData {
        resource_spans: spans
            .iter()
            .map(|sp| ResourceSpans {
                resource: Some(Resource { attributes: vec![kv("service.name", &sp.service)], ..Default::default() }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope { name: "envoy".into(), ..Default::default() }),
                    spans: vec![PSpan {
                        trace_id: trace_id.clone(),
                        span_id: sp.span_id.to_vec(),
                        parent_span_id: sp.parent.to_vec(),
                        name: sp.name.clone(),
                        kind: SpanKind::Server as i32,
                        start_time_unix_nano: sp.start_ns,
                        end_time_unix_nano: sp.start_ns + 4_000_000,
                        attributes: sp.attributes.iter().map(|(k, v)| kv(k, v)).collect(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
    .encode_to_vec()
}
