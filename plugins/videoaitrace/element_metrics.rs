// SPDX-License-Identifier: MPL-2.0
//! videoai elements' `stats` as Prometheus metrics. Which field becomes which metric is written
//! down once per element here (the README lists them): names with the `videoai_` prefix, base
//! units (seconds), `_total` on counters. Every series carries `pipeline` and `element` labels;
//! per-stream entries (framesync, framesplit) add `stream` and `pad`, onnxinfer's per-model
//! entries `model` and `role`, raftsink its `stream-id` as `stream`.
//!
//! The elements are found at each scrape in the pipelines the tracer saw starting (so
//! elements added while running are exported too). The scrape reads each element's `stats`
//! property on the server thread: the same snapshot an application reads. Building it takes the
//! element's own locks for the microseconds it takes to copy its counters (a streaming thread
//! that wants one then waits that long, never for the scrape's HTTP work); the scrape may wait
//! for an element to finish its current step (framesync's `aggregate`) before it reads.

use std::collections::BTreeMap;
use std::sync::Mutex;

use gst::glib;
use gst::prelude::*;
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Counter,
    Gauge,
}

/// A numeric field of a stats structure and the metric it becomes.
struct Field {
    field: &'static str,
    metric: &'static str,
    kind: Kind,
    /// The field's units per base unit (1000 for a field in ms, exported in seconds).
    per_base: f64,
    /// A label the field stands for (e.g. the reason of a drop).
    label: Option<(&'static str, &'static str)>,
    help: &'static str,
}

const fn counter(field: &'static str, metric: &'static str, help: &'static str) -> Field {
    Field {
        field,
        metric,
        kind: Kind::Counter,
        per_base: 1.0,
        label: None,
        help,
    }
}

const fn gauge(field: &'static str, metric: &'static str, help: &'static str) -> Field {
    Field {
        kind: Kind::Gauge,
        ..counter(field, metric, help)
    }
}

impl Field {
    const fn scaled(self, per_base: f64) -> Field {
        Field { per_base, ..self }
    }

    const fn labelled(self, name: &'static str, value: &'static str) -> Field {
        Field {
            label: Some((name, value)),
            ..self
        }
    }
}

/// Help texts shared by the fields that make one metric.
const AQ_DROPPED: &str = "Buffers the queue dropped, by reason";
const FS_FRAMES: &str = "Batch entries per stream, by status: fresh (a new frame), repeated (the last frame again), missing (none yet), dropped (frames not batched)";
const STAGE_MEAN: &str = "Time per frame in a stage (mean since start)";
// raftsink's delivery targets (label target: nats, mqtt, webhook), each only when set.
const DELIVERED: &str = "Events a delivery target acknowledged";
const WAITING: &str = "Events in the log a delivery target has not acknowledged yet";
const RETRIES: &str = "Delivery attempts tried again (a lost connection, a 5xx answer)";
const DEAD: &str = "Events a delivery target refused for good (dead letters)";
const CONNECTED: &str = "1 while connected to the delivery target";
const ACK_P50: &str =
    "Time from publishing an event to its acknowledgement by the target (median since start)";
const ACK_P99: &str = "Time from publishing an event to its acknowledgement by the target (99th percentile since start)";
const STAGE_P99: &str = "Time per frame in a stage (99th percentile since start)";
const MODEL_STAGE_MEAN: &str = "Time per frame in a stage for a model (mean since start)";

const MS: f64 = 1e3;
const US: f64 = 1e6;
const NS: f64 = 1e9;

/// Entries of an array field (one per stream or model), each with labels from its own string
/// fields.
struct Entries {
    field: &'static str,
    /// (label, string field of the entry).
    labels: &'static [(&'static str, &'static str)],
    fields: &'static [Field],
}

/// A string field with a known set of values: one series per value, 1 for the current one.
struct StateSet {
    field: &'static str,
    metric: &'static str,
    label: &'static str,
    values: &'static [&'static str],
    help: &'static str,
}

/// String fields exported as labels of a gauge that is always 1.
struct Info {
    metric: &'static str,
    /// (label, string field).
    labels: &'static [(&'static str, &'static str)],
    help: &'static str,
}

struct Spec {
    factory: &'static str,
    /// The element's GType name: how an element is recognised when it is created (the
    /// factory is not known yet then, for the first element of a kind).
    type_name: &'static str,
    fields: &'static [Field],
    entries: &'static [Entries],
    states: &'static [StateSet],
    infos: &'static [Info],
    /// The element property naming its stream (the `stream` label), if it has one; when it is
    /// unset, the `stream` field of its stats.
    stream_property: Option<&'static str>,
}

const SPECS: &[Spec] = &[
    Spec {
        factory: "adaptivequeue",
        type_name: "GstAdaptiveQueue",
        fields: &[
            counter("in", "videoai_adaptivequeue_buffers_in_total", "Buffers that entered the queue"),
            counter("out", "videoai_adaptivequeue_buffers_out_total", "Buffers the queue pushed downstream"),
            counter("dropped-watermark", "videoai_adaptivequeue_dropped_total", AQ_DROPPED)
                .labelled("reason", "watermark"),
            counter("dropped-expired", "videoai_adaptivequeue_dropped_total", AQ_DROPPED)
                .labelled("reason", "expired"),
            counter("dropped-adaptive", "videoai_adaptivequeue_dropped_total", AQ_DROPPED)
                .labelled("reason", "adaptive"),
            counter("dropped-gop-tail", "videoai_adaptivequeue_dropped_total", AQ_DROPPED)
                .labelled("reason", "gop-tail"),
            gauge("current-level-time", "videoai_adaptivequeue_level_seconds", "Media time queued").scaled(NS),
            gauge("current-level-buffers", "videoai_adaptivequeue_level_buffers", "Buffers queued"),
            gauge("ewma-processing-time", "videoai_adaptivequeue_processing_seconds", "Downstream processing time per buffer (moving average)")
                .scaled(NS),
            gauge("pass-ratio", "videoai_adaptivequeue_pass_ratio", "Share of frames the adaptive mode lets through (1: all)"),
            gauge("upstream-live", "videoai_adaptivequeue_upstream_live", "1 when the source upstream is live"),
        ],
        entries: &[],
        states: &[StateSet {
            field: "level",
            metric: "videoai_adaptivequeue_level_state",
            label: "level",
            values: &["low", "normal", "high"],
            help: "The queue's fill level class (1 for the current one)",
        }],
        infos: &[],
        stream_property: None,
    },
    Spec {
        factory: "framesync",
        type_name: "GstFrameSync",
        fields: &[
            counter("batches", "videoai_framesync_batches_total", "Batches pushed"),
            counter("skipped-ticks", "videoai_framesync_skipped_ticks_total", "Ticks skipped because batching fell behind"),
            gauge("framerate", "videoai_framesync_tick_rate_hertz", "Batches per second"),
            gauge("overhead-us-mean", "videoai_framesync_overhead_mean_seconds", "CPU time per batch (mean)").scaled(US),
            gauge("overhead-us-max", "videoai_framesync_overhead_max_seconds", "CPU time per batch (max)").scaled(US),
        ],
        entries: &[Entries {
            field: "streams",
            labels: &[("stream", "stream-id"), ("pad", "pad")],
            fields: &[
                counter("fresh", "videoai_framesync_frames_total", FS_FRAMES)
                    .labelled("status", "fresh"),
                counter("repeated", "videoai_framesync_frames_total", FS_FRAMES)
                    .labelled("status", "repeated"),
                counter("missing", "videoai_framesync_frames_total", FS_FRAMES)
                    .labelled("status", "missing"),
                counter("dropped", "videoai_framesync_frames_total", FS_FRAMES)
                    .labelled("status", "dropped"),
                gauge("skew-ns", "videoai_framesync_skew_seconds", "Clock offset of the stream against the first one").scaled(NS),
            ],
        }],
        states: &[],
        infos: &[],
        stream_property: None,
    },
    Spec {
        factory: "onnxinfer",
        type_name: "GstOnnxInfer",
        fields: &[
            counter("frames", "videoai_onnxinfer_frames_total", "Frames seen"),
            counter("inferred", "videoai_onnxinfer_frames_inferred_total", "Frames inferred"),
            counter("skipped", "videoai_onnxinfer_frames_skipped_total", "Frames passed on without inference (interval, unreadable)"),
            counter("invalid-outputs", "videoai_onnxinfer_invalid_outputs_total", "Non-finite or out-of-range model outputs dropped"),
            counter("swaps", "videoai_onnxinfer_swaps_total", "Models switched in while running"),
            counter("swaps-refused", "videoai_onnxinfer_swaps_refused_total", "Models refused while running (the old one kept running)"),
            counter("batches", "videoai_onnxinfer_batches_total", "framesync batches seen"),
            counter("batch-runs", "videoai_onnxinfer_batch_runs_total", "Model runs on batches"),
            gauge("preprocess-mean-ms", "videoai_onnxinfer_stage_mean_seconds", STAGE_MEAN)
                .scaled(MS).labelled("stage", "preprocess"),
            gauge("inference-mean-ms", "videoai_onnxinfer_stage_mean_seconds", STAGE_MEAN)
                .scaled(MS).labelled("stage", "inference"),
            gauge("postprocess-mean-ms", "videoai_onnxinfer_stage_mean_seconds", STAGE_MEAN)
                .scaled(MS).labelled("stage", "postprocess"),
            gauge("preprocess-p99-ms", "videoai_onnxinfer_stage_p99_seconds", STAGE_P99)
                .scaled(MS).labelled("stage", "preprocess"),
            gauge("inference-p99-ms", "videoai_onnxinfer_stage_p99_seconds", STAGE_P99)
                .scaled(MS).labelled("stage", "inference"),
            gauge("postprocess-p99-ms", "videoai_onnxinfer_stage_p99_seconds", STAGE_P99)
                .scaled(MS).labelled("stage", "postprocess"),
        ],
        entries: &[Entries {
            field: "models",
            labels: &[("model", "model"), ("role", "role")],
            fields: &[
                counter("frames", "videoai_onnxinfer_model_frames_total", "Frames a model inferred"),
                counter("detections", "videoai_onnxinfer_model_detections_total", "Detections a model made"),
                gauge("preprocess-mean-ms", "videoai_onnxinfer_model_stage_mean_seconds", MODEL_STAGE_MEAN)
                    .scaled(MS).labelled("stage", "preprocess"),
                gauge("inference-mean-ms", "videoai_onnxinfer_model_stage_mean_seconds", MODEL_STAGE_MEAN)
                    .scaled(MS).labelled("stage", "inference"),
                gauge("postprocess-mean-ms", "videoai_onnxinfer_model_stage_mean_seconds", MODEL_STAGE_MEAN)
                    .scaled(MS).labelled("stage", "postprocess"),
                gauge("inference-p99-ms", "videoai_onnxinfer_model_inference_p99_seconds", "Inference time per frame for a model (99th percentile since start)")
                    .scaled(MS),
            ],
        }],
        states: &[],
        infos: &[Info {
            metric: "videoai_onnxinfer_models_info",
            labels: &[("model", "model"), ("canary_model", "canary-model"), ("canary_disabled", "canary-disabled")],
            help: "The models running (always 1)",
        }],
        stream_property: None,
    },
    Spec {
        factory: "raftsink",
        type_name: "GstRaftSink",
        fields: &[
            counter("written", "videoai_raftsink_events_written_total", "Events stored in the local log"),
            counter("duplicates", "videoai_raftsink_events_duplicate_total", "Events already stored (replays, restarts): stored once"),
            counter("commits", "videoai_raftsink_commits_total", "Log commits"),
            gauge("queued", "videoai_raftsink_events_queued", "Events handed over, not yet committed"),
            counter("skipped-empty", "videoai_raftsink_buffers_skipped_empty_total", "Buffers without detections skipped (store-empty=false)"),
            counter("invalid-detections", "videoai_raftsink_detections_invalid_total", "Detections dropped for a non-finite number"),
            gauge("commit-latency-p50-ms", "videoai_raftsink_commit_latency_p50_seconds", "Time from handing an event over to its commit (median since start)")
                .scaled(MS),
            gauge("commit-latency-p99-ms", "videoai_raftsink_commit_latency_p99_seconds", "Time from handing an event over to its commit (99th percentile since start)")
                .scaled(MS),
            counter("forwarded", "videoai_raftsink_events_forwarded_total", "Events acknowledged by NATS JetStream"),
            counter("already-in-nats", "videoai_raftsink_events_already_in_nats_total", "Events NATS already had (not sent again)"),
            gauge("pending", "videoai_raftsink_events_pending", "Events in the outbox not yet acknowledged by NATS"),
            counter("dead-letters", "videoai_raftsink_dead_letters_total", "Events NATS refused for good (parked)"),
            counter("retries", "videoai_raftsink_retries_total", "Publish attempts retried"),
            gauge("nats-connected", "videoai_raftsink_nats_connected", "1 while connected to NATS"),
            gauge("ack-latency-p50-ms", "videoai_raftsink_ack_latency_p50_seconds", "Time from publishing an event to its acknowledgement by NATS (median since start)")
                .scaled(MS),
            gauge("ack-latency-p99-ms", "videoai_raftsink_ack_latency_p99_seconds", "Time from publishing an event to its acknowledgement by NATS (99th percentile since start)")
                .scaled(MS),
            counter("forwarded", "videoai_raftsink_delivered_total", DELIVERED).labelled("target", "nats"),
            gauge("pending", "videoai_raftsink_delivery_waiting", WAITING).labelled("target", "nats"),
            counter("retries", "videoai_raftsink_delivery_retries_total", RETRIES).labelled("target", "nats"),
            counter("dead-letters", "videoai_raftsink_delivery_dead_letters_total", DEAD).labelled("target", "nats"),
            gauge("nats-connected", "videoai_raftsink_delivery_connected", CONNECTED).labelled("target", "nats"),
            gauge("ack-latency-p50-ms", "videoai_raftsink_delivery_ack_latency_p50_seconds", ACK_P50)
                .scaled(MS).labelled("target", "nats"),
            gauge("ack-latency-p99-ms", "videoai_raftsink_delivery_ack_latency_p99_seconds", ACK_P99)
                .scaled(MS).labelled("target", "nats"),
            counter("mqtt-delivered", "videoai_raftsink_delivered_total", DELIVERED).labelled("target", "mqtt"),
            gauge("mqtt-pending", "videoai_raftsink_delivery_waiting", WAITING).labelled("target", "mqtt"),
            counter("mqtt-retries", "videoai_raftsink_delivery_retries_total", RETRIES).labelled("target", "mqtt"),
            counter("mqtt-dead-letters", "videoai_raftsink_delivery_dead_letters_total", DEAD).labelled("target", "mqtt"),
            gauge("mqtt-connected", "videoai_raftsink_delivery_connected", CONNECTED).labelled("target", "mqtt"),
            gauge("mqtt-ack-latency-p50-ms", "videoai_raftsink_delivery_ack_latency_p50_seconds", ACK_P50)
                .scaled(MS).labelled("target", "mqtt"),
            gauge("mqtt-ack-latency-p99-ms", "videoai_raftsink_delivery_ack_latency_p99_seconds", ACK_P99)
                .scaled(MS).labelled("target", "mqtt"),
            counter("webhook-delivered", "videoai_raftsink_delivered_total", DELIVERED).labelled("target", "webhook"),
            gauge("webhook-pending", "videoai_raftsink_delivery_waiting", WAITING).labelled("target", "webhook"),
            counter("webhook-retries", "videoai_raftsink_delivery_retries_total", RETRIES).labelled("target", "webhook"),
            counter("webhook-dead-letters", "videoai_raftsink_delivery_dead_letters_total", DEAD).labelled("target", "webhook"),
            gauge("webhook-ack-latency-p50-ms", "videoai_raftsink_delivery_ack_latency_p50_seconds", ACK_P50)
                .scaled(MS).labelled("target", "webhook"),
            gauge("webhook-ack-latency-p99-ms", "videoai_raftsink_delivery_ack_latency_p99_seconds", ACK_P99)
                .scaled(MS).labelled("target", "webhook"),
        ],
        entries: &[],
        states: &[],
        infos: &[],
        stream_property: Some("stream-id"),
    },
    Spec {
        factory: "resilientsrc",
        type_name: "GstResilientSrc",
        fields: &[
            counter("reconnects", "videoai_resilientsrc_reconnects_total", "Reconnections after a failure or stall"),
            gauge("attempt", "videoai_resilientsrc_attempt", "Failed connection attempts in a row (0 while running)"),
            counter("frames", "videoai_resilientsrc_frames_total", "Frames pushed"),
            counter("dropped", "videoai_resilientsrc_frames_dropped_total", "Live frames dropped while downstream lagged or the pipeline was not playing"),
        ],
        entries: &[],
        states: &[StateSet {
            field: "status",
            metric: "videoai_resilientsrc_status",
            label: "status",
            values: &["stopped", "connecting", "running", "retrying", "failed", "ended"],
            help: "The source's connection status (1 for the current one)",
        }],
        infos: &[Info {
            metric: "videoai_resilientsrc_stream_info",
            labels: &[("container", "container"), ("codec", "codec"), ("decoder", "decoder"), ("decoder_kind", "decoder-kind")],
            help: "What the source receives and decodes it with (always 1)",
        }],
        stream_property: None,
    },
    Spec {
        factory: "framesplit",
        type_name: "GstFrameSplit",
        fields: &[counter("batches", "videoai_framesplit_batches_total", "Batches split")],
        entries: &[Entries {
            field: "streams",
            labels: &[("stream", "stream-id"), ("pad", "pad")],
            fields: &[counter("frames", "videoai_framesplit_frames_total", "Frames pushed per stream")],
        }],
        states: &[],
        infos: &[],
        stream_property: None,
    },
];

/// The numeric value of `field` (integers, floats, booleans as 0/1, fractions), if any.
fn number(s: &gst::StructureRef, field: &str) -> Option<f64> {
    let v = s.value(field).ok()?;
    if let Ok(x) = v.get::<u64>() {
        return Some(x as f64);
    }
    if let Ok(x) = v.get::<i64>() {
        return Some(x as f64);
    }
    if let Ok(x) = v.get::<u32>() {
        return Some(x as f64);
    }
    if let Ok(x) = v.get::<i32>() {
        return Some(x as f64);
    }
    if let Ok(x) = v.get::<f64>() {
        return Some(x);
    }
    if let Ok(x) = v.get::<bool>() {
        return Some(if x { 1.0 } else { 0.0 });
    }
    if let Ok(f) = v.get::<gst::Fraction>() {
        return (f.denom() != 0).then(|| f.numer() as f64 / f.denom() as f64);
    }
    None
}

fn string(s: &gst::StructureRef, field: &str) -> String {
    s.get::<String>(field).unwrap_or_default()
}

/// Metric families being built, merged by name (every element of a kind adds its series to
/// the same family).
#[derive(Default)]
pub struct Families(BTreeMap<&'static str, MetricFamily>);

impl Families {
    fn add(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        let family = self.0.entry(name).or_insert_with(|| {
            let mut f = MetricFamily::default();
            f.set_name(name.to_string());
            f.set_help(help.to_string());
            f.set_field_type(match kind {
                Kind::Counter => MetricType::COUNTER,
                Kind::Gauge => MetricType::GAUGE,
            });
            f
        });
        let mut m = Metric::default();
        m.set_label(
            labels
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| {
                    let mut l = LabelPair::default();
                    l.set_name(k.to_string());
                    l.set_value(v.to_string());
                    l
                })
                .collect(),
        );
        match kind {
            Kind::Counter => {
                let mut c = Counter::default();
                c.set_value(value);
                m.set_counter(c);
            }
            Kind::Gauge => {
                let mut g = Gauge::default();
                g.set_value(value);
                m.set_gauge(g);
            }
        }
        family.mut_metric().push(m);
    }

    fn fields(&mut self, fields: &[Field], s: &gst::StructureRef, labels: &[(&str, &str)]) {
        for f in fields {
            let Some(v) = number(s, f.field) else {
                continue;
            };
            let mut l = labels.to_vec();
            l.extend(f.label);
            self.add(f.metric, f.help, f.kind, &l, v / f.per_base);
        }
    }

    /// Adds the series of one element's `stats`; false if videoai has no mapping for it.
    pub fn element(
        &mut self,
        factory: &str,
        stats: &gst::StructureRef,
        labels: &[(&str, &str)],
    ) -> bool {
        let Some(spec) = SPECS.iter().find(|s| s.factory == factory) else {
            return false;
        };
        self.fields(spec.fields, stats, labels);
        for e in spec.entries {
            let Ok(array) = stats.get::<gst::Array>(e.field) else {
                continue;
            };
            for v in array.iter() {
                let Ok(entry) = v.get::<gst::Structure>() else {
                    continue;
                };
                let values: Vec<String> = e.labels.iter().map(|(_, f)| string(&entry, f)).collect();
                let mut l = labels.to_vec();
                l.extend(
                    e.labels
                        .iter()
                        .zip(&values)
                        .map(|((k, _), v)| (*k, v.as_str())),
                );
                self.fields(e.fields, &entry, &l);
            }
        }
        for st in spec.states {
            let current = string(stats, st.field);
            for value in st.values {
                let mut l = labels.to_vec();
                l.push((st.label, value));
                let on = if current == *value { 1.0 } else { 0.0 };
                self.add(st.metric, st.help, Kind::Gauge, &l, on);
            }
        }
        for info in spec.infos {
            let values: Vec<String> = info.labels.iter().map(|(_, f)| string(stats, f)).collect();
            let mut l = labels.to_vec();
            l.extend(
                info.labels
                    .iter()
                    .zip(&values)
                    .map(|((k, _), v)| (*k, v.as_str())),
            );
            self.add(info.metric, info.help, Kind::Gauge, &l, 1.0);
        }
        true
    }

    pub fn into_vec(self) -> Vec<MetricFamily> {
        self.0.into_values().collect()
    }
}

/// The top-level pipelines seen starting (as weak references), whose videoai elements are
/// exported.
#[derive(Default)]
pub struct Watched(Mutex<Vec<glib::WeakRef<gst::Element>>>);

impl Watched {
    /// Notes a top-level pipeline (or bin) once.
    pub fn note_top(&self, top: &gst::Element) {
        let mut list = self.0.lock().unwrap();
        list.retain(|w| w.upgrade().is_some());
        if !list.iter().any(|w| w.upgrade().as_ref() == Some(top)) {
            list.push(top.downgrade());
        }
    }

    /// The videoai elements with statistics in the pipelines still alive.
    pub fn elements(&self) -> Vec<gst::Element> {
        let tops: Vec<gst::Element> = {
            let list = self.0.lock().unwrap();
            list.iter().filter_map(|w| w.upgrade()).collect()
        };
        let mut found = Vec::new();
        for top in tops {
            let Some(bin) = top.downcast_ref::<gst::Bin>() else {
                continue;
            };
            // A bin changing while iterated: start again (bounded).
            for _ in 0..8 {
                match bin
                    .iterate_recurse()
                    .into_iter()
                    .collect::<Result<Vec<gst::Element>, _>>()
                {
                    Ok(all) => {
                        found.extend(all.into_iter().filter(|e| spec_of(e).is_some()));
                        break;
                    }
                    Err(_) => continue,
                }
            }
        }
        found
    }
}

fn spec_of(element: &gst::Element) -> Option<&'static Spec> {
    let type_name = element.type_().name();
    SPECS.iter().find(|s| s.type_name == type_name)
}

/// The name of the top-level pipeline (or bin) `element` is in; empty when in none.
pub fn pipeline_of(element: &gst::Element) -> String {
    let mut top: Option<gst::Object> = element.parent();
    while let Some(p) = top.as_ref().and_then(|t| t.parent()) {
        top = Some(p);
    }
    top.map(|t| t.name().to_string()).unwrap_or_default()
}

/// The series of every watched element's `stats`.
pub fn gather(watched: &Watched) -> Vec<MetricFamily> {
    let mut families = Families::default();
    for element in watched.elements() {
        let Some(spec) = spec_of(&element) else {
            continue;
        };
        let stats = element.property::<gst::Structure>("stats");
        let pipeline = pipeline_of(&element);
        let name = element.name();
        // The stream the element names in its property, else the one its stats say it works on
        // (raftsink without stream-id: the STREAM_START id its events go under).
        let spec_stream = spec
            .stream_property
            .and_then(|p| element.property::<Option<String>>(p))
            .filter(|s| !s.is_empty())
            .or_else(|| {
                spec.stream_property
                    .and_then(|_| stats.get::<String>("stream").ok())
            })
            .unwrap_or_default();
        let mut labels = vec![("pipeline", pipeline.as_str()), ("element", name.as_str())];
        if !spec_stream.is_empty() {
            labels.push(("stream", spec_stream.as_str()));
        }
        families.element(spec.factory, &stats, &labels);
    }
    families.into_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(f: Vec<MetricFamily>) -> String {
        use prometheus::Encoder;
        let mut out = Vec::new();
        prometheus::TextEncoder::new().encode(&f, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn stats_become_series_in_base_units_with_their_labels() {
        gst::init().unwrap();
        let streams = gst::Array::new([gst::Structure::builder("stream")
            .field("pad", "sink_0")
            .field("stream-id", "cam-0")
            .field("fresh", 10u64)
            .field("repeated", 1u64)
            .field("missing", 2u64)
            .field("dropped", 0u64)
            .field("skew-ns", 2_000_000i64)
            .build()
            .to_send_value()]);
        let stats = gst::Structure::builder("framesync-stats")
            .field("batches", 13u64)
            .field("skipped-ticks", 0u64)
            .field("framerate", gst::Fraction::new(30, 1))
            .field("overhead-us-mean", 12.5f64)
            .field("overhead-us-max", 40.0f64)
            .field("streams", streams)
            .build();
        let mut f = Families::default();
        assert!(f.element(
            "framesync",
            &stats,
            &[("pipeline", "p"), ("element", "sync")]
        ));
        let text = render(f.into_vec());
        for line in [
            "videoai_framesync_batches_total{pipeline=\"p\",element=\"sync\"} 13",
            "videoai_framesync_tick_rate_hertz{pipeline=\"p\",element=\"sync\"} 30",
            "videoai_framesync_overhead_mean_seconds{pipeline=\"p\",element=\"sync\"} 0.0000125",
            "videoai_framesync_frames_total{pipeline=\"p\",element=\"sync\",stream=\"cam-0\",pad=\"sink_0\",status=\"missing\"} 2",
            "videoai_framesync_skew_seconds{pipeline=\"p\",element=\"sync\",stream=\"cam-0\",pad=\"sink_0\"} 0.002",
            "# TYPE videoai_framesync_frames_total counter",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn states_are_one_series_per_value() {
        gst::init().unwrap();
        let stats = gst::Structure::builder("resilientsrc-stats")
            .field("status", "retrying")
            .field("reconnects", 3u64)
            .field("attempt", 2u32)
            .field("frames", 100u64)
            .field("dropped", 0u64)
            .field("container", "")
            .field("codec", "h264")
            .field("decoder", "avdec_h264")
            .field("decoder-kind", "cpu")
            .build();
        let mut f = Families::default();
        assert!(f.element(
            "resilientsrc",
            &stats,
            &[("pipeline", "p"), ("element", "cam")]
        ));
        let text = render(f.into_vec());
        assert!(
            text.contains(
                "videoai_resilientsrc_status{pipeline=\"p\",element=\"cam\",status=\"retrying\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "videoai_resilientsrc_status{pipeline=\"p\",element=\"cam\",status=\"running\"} 0"
            ),
            "{text}"
        );
        assert!(text.contains("videoai_resilientsrc_stream_info{pipeline=\"p\",element=\"cam\",codec=\"h264\",decoder=\"avdec_h264\",decoder_kind=\"cpu\"} 1"), "{text}");
        assert!(!f_knows("detectionoverlay"));
    }

    fn f_knows(factory: &str) -> bool {
        Families::default().element(factory, &gst::Structure::new_empty("x"), &[])
    }

    #[test]
    fn every_metric_name_follows_the_conventions() {
        for spec in SPECS {
            let names = spec
                .fields
                .iter()
                .chain(spec.entries.iter().flat_map(|e| e.fields.iter()));
            for f in names {
                assert!(f.metric.starts_with("videoai_"), "{}", f.metric);
                assert_eq!(
                    f.kind == Kind::Counter,
                    f.metric.ends_with("_total"),
                    "{}",
                    f.metric
                );
                assert!(
                    !f.metric.contains("_ms")
                        && !f.metric.contains("_us")
                        && !f.metric.contains("_ns"),
                    "base units only: {}",
                    f.metric
                );
                if f.per_base != 1.0 {
                    assert!(
                        f.metric.contains("_seconds"),
                        "{} is scaled to seconds",
                        f.metric
                    );
                }
            }
        }
    }
}
