//! Tempo: the spans it holds and its trace-by-id API (JSON or OTLP protobuf).

use base64::Engine;
use serde_json::{Value, json};

/// How long a finished span waits in the proxy before Tempo can return it: Envoy's OpenTelemetry
/// tracer exports its buffer every `tracing.opentelemetry.flush_interval_ms`, 5000 by default, or
/// once `min_flush_spans` (5) are buffered (envoy source/extensions/tracers/opentelemetry/tracer.cc
/// `Tracer::enableTimer`). The simulation takes the timer's bound for the gateway's spans: a
/// collector that does not wait for it sees no trace. Each proxy runs its own timer, so the spans
/// of one trace reach Tempo at different times: a waypoint's come one interval after the
/// gateway's ([`WAYPOINT_EXPORT_DELAY`]), and until then Tempo answers with part of the trace.
pub(super) const EXPORT_DELAY: std::time::Duration = std::time::Duration::from_secs(5);

/// When a waypoint's spans reach Tempo: its flush timer is out of phase with the gateway's.
pub(super) const WAYPOINT_EXPORT_DELAY: std::time::Duration = std::time::Duration::from_secs(10);

/// One span as the gateway reports it to Tempo.
#[derive(Debug, Clone)]
pub struct Span {
    /// When the proxy finished it.
    pub recorded: std::time::Instant,
    /// How long after that it reaches Tempo: its proxy's next flush (cluster time).
    pub export_after: std::time::Duration,
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

/// Tempo's configuration file as its pod mounts it: `tempo.yaml` of the ConfigMap volume (the
/// tempo chart 1.26.1 templates/statefulset.yaml mounts ConfigMap `<fullname>` at /conf and runs
/// `-config.file=/conf/tempo.yaml`).
fn config(st: &super::State, pod: &Value) -> Value {
    let ns = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
    pod.pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.pointer("/configMap/name").and_then(Value::as_str))
        .filter_map(|name| st.store.get("", "configmaps", ns, name))
        .find_map(|cm| cm.pointer("/data/tempo.yaml").and_then(Value::as_str).map(String::from))
        .and_then(|text| serde_saphyr::from_str::<Value>(&text).ok())
        .unwrap_or(Value::Null)
}

/// The HTTP API port: `server.http_listen_port`, default 3200 (tempo v2.10.0
/// cmd/tempo/app/config.go `HTTPListenPort`).
pub(super) fn http_port(st: &super::State, pod: &Value) -> u16 {
    config(st, pod)
        .pointer("/server/http_listen_port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(3200)
}

/// The port the OTLP gRPC receiver accepts connections from other pods on, if any: its
/// `endpoint` must bind a non-loopback address. Tempo's receivers default to `localhost:4317`
/// ("By default, receivers listen to localhost", tempo v2.10.0
/// docs/sources/tempo/configuration/_index.md#L155-L162), so an endpoint left out or on
/// localhost receives nothing from istiod's exporters.
pub(super) fn otlp_grpc_port(st: &super::State, pod: &Value) -> Option<u16> {
    let endpoint = config(st, pod)
        .pointer("/distributor/receivers/otlp/protocols/grpc/endpoint")
        .and_then(Value::as_str)
        .map(String::from)?;
    let (host, port) = endpoint.rsplit_once(':')?;
    let reachable = !matches!(host, "localhost" | "127.0.0.1" | "[::1]");
    reachable.then(|| port.parse().ok()).flatten()
}
