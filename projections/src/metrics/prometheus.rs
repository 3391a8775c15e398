//! A small recorder of the `metrics` facade that renders the Prometheus text format: counters,
//! gauges, and histograms with fixed buckets. Enough for a `/metrics` endpoint without an
//! exporter's dependencies; any other exporter of the facade works as well.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};

/// Upper bounds of the histogram buckets, in the metric's unit (seconds for durations).
const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// One histogram series: counts per bucket (not cumulative), sum and count.
#[derive(Debug, Default)]
struct Buckets {
    state: Mutex<BucketState>,
}

#[derive(Debug, Default)]
struct BucketState {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl HistogramFn for Buckets {
    fn record(&self, value: f64) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(bucket) = BUCKETS.iter().position(|bound| value <= *bound) {
            state.counts[bucket] += 1;
        }
        state.sum += value;
        state.count += 1;
    }
}

#[derive(Debug, Clone)]
enum Series {
    /// A counter's value.
    Counter(Arc<AtomicU64>),
    /// A gauge's value, as the bits of an `f64` (how the facade's `GaugeFn` for `AtomicU64`
    /// keeps it).
    Gauge(Arc<AtomicU64>),
    Histogram(Arc<Buckets>),
}

type Labels = Vec<(String, String)>;

/// One metric name: its kind and its series, by labels.
type Family = (Kind, BTreeMap<Labels, Series>);

#[derive(Debug, Default)]
struct Registry {
    /// name -> (kind, labels -> series), in name order for a stable rendering.
    families: Mutex<BTreeMap<String, Family>>,
    /// name -> description.
    help: Mutex<BTreeMap<String, String>>,
}

impl Registry {
    fn series(&self, key: &Key, kind: Kind) -> Series {
        let labels: Labels = key
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        let mut families = self.families.lock().unwrap_or_else(PoisonError::into_inner);
        let (family_kind, series) = families
            .entry(key.name().to_owned())
            .or_insert_with(|| (kind, BTreeMap::new()));
        if *family_kind != kind {
            // One name of two kinds cannot be rendered: the second kind records into a
            // series that is never shown.
            return new_series(kind);
        }
        series
            .entry(labels)
            .or_insert_with(|| new_series(kind))
            .clone()
    }

    fn describe(&self, key: KeyName, description: SharedString) {
        self.help
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.as_str().to_owned(), description.into_owned());
    }
}

fn new_series(kind: Kind) -> Series {
    match kind {
        Kind::Counter => Series::Counter(Arc::new(AtomicU64::new(0))),
        Kind::Gauge => Series::Gauge(Arc::new(AtomicU64::new(0.0_f64.to_bits()))),
        Kind::Histogram => Series::Histogram(Arc::new(Buckets::default())),
    }
}

/// A recorder of the `metrics` facade that keeps every metric in memory and renders them in
/// the Prometheus text format ([`PrometheusHandle::render`]).
#[derive(Debug, Clone, Default)]
pub struct PrometheusRecorder {
    registry: Arc<Registry>,
}

/// Renders what a [`PrometheusRecorder`] holds. Cloneable; cheap.
#[derive(Debug, Clone)]
pub struct PrometheusHandle {
    registry: Arc<Registry>,
}

/// Another recorder was installed first.
#[derive(Debug, thiserror::Error)]
#[error("another metrics recorder is already installed in this process")]
#[non_exhaustive]
pub struct InstallError;

static INSTALLED: OnceLock<PrometheusHandle> = OnceLock::new();

impl PrometheusRecorder {
    /// An empty recorder, not installed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Its handle, to render what it records.
    pub fn handle(&self) -> PrometheusHandle {
        PrometheusHandle {
            registry: Arc::clone(&self.registry),
        }
    }

    /// Installs it as the process's recorder and describes this crate's metrics
    /// ([`describe`](super::describe)); returns its handle.
    pub fn install(self) -> Result<PrometheusHandle, InstallError> {
        let handle = self.handle();
        metrics::set_global_recorder(self).map_err(|_| InstallError)?;
        super::describe();
        Ok(handle)
    }

    /// The handle of the recorder this function installed in this process, installing one the
    /// first time. Fails only when a recorder of another kind was installed first.
    pub fn install_once() -> Result<PrometheusHandle, InstallError> {
        if let Some(handle) = INSTALLED.get() {
            return Ok(handle.clone());
        }
        let mut error = None;
        let handle = INSTALLED.get_or_init(|| {
            let recorder = Self::new();
            let handle = recorder.handle();
            if recorder.install().is_err() {
                error = Some(InstallError);
            }
            handle
        });
        match error {
            Some(error) => Err(error),
            None => Ok(handle.clone()),
        }
    }
}

impl Recorder for PrometheusRecorder {
    fn describe_counter(&self, key: KeyName, _unit: Option<Unit>, description: SharedString) {
        self.registry.describe(key, description);
    }

    fn describe_gauge(&self, key: KeyName, _unit: Option<Unit>, description: SharedString) {
        self.registry.describe(key, description);
    }

    fn describe_histogram(&self, key: KeyName, _unit: Option<Unit>, description: SharedString) {
        self.registry.describe(key, description);
    }

    fn register_counter(&self, key: &Key, _metadata: &Metadata<'_>) -> Counter {
        match self.registry.series(key, Kind::Counter) {
            Series::Counter(value) => Counter::from_arc(value),
            _ => Counter::noop(),
        }
    }

    fn register_gauge(&self, key: &Key, _metadata: &Metadata<'_>) -> Gauge {
        match self.registry.series(key, Kind::Gauge) {
            Series::Gauge(value) => Gauge::from_arc(value),
            _ => Gauge::noop(),
        }
    }

    fn register_histogram(&self, key: &Key, _metadata: &Metadata<'_>) -> Histogram {
        match self.registry.series(key, Kind::Histogram) {
            Series::Histogram(buckets) => Histogram::from_arc(buckets),
            _ => Histogram::noop(),
        }
    }
}

impl PrometheusHandle {
    /// Every metric recorded so far, in the Prometheus text format (version 0.0.4), families
    /// in name order.
    pub fn render(&self) -> String {
        let help = self
            .registry
            .help
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let families = self
            .registry
            .families
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut out = String::new();
        for (name, (kind, series)) in families.iter() {
            if let Some(text) = help.get(name) {
                let _ = writeln!(out, "# HELP {name} {}", escape_help(text));
            }
            let _ = writeln!(out, "# TYPE {name} {}", kind.as_str());
            for (labels, value) in series {
                match value {
                    Series::Counter(value) => {
                        let value = value.load(Ordering::Relaxed);
                        let _ = writeln!(out, "{name}{} {value}", render_labels(labels, None));
                    }
                    Series::Gauge(bits) => {
                        let value = f64::from_bits(bits.load(Ordering::Relaxed));
                        let _ = writeln!(
                            out,
                            "{name}{} {}",
                            render_labels(labels, None),
                            number(value)
                        );
                    }
                    Series::Histogram(buckets) => {
                        let state = buckets.state.lock().unwrap_or_else(PoisonError::into_inner);
                        let mut cumulative = 0;
                        for (bound, count) in BUCKETS.iter().zip(state.counts) {
                            cumulative += count;
                            let le = number(*bound);
                            let labels = render_labels(labels, Some(&le));
                            let _ = writeln!(out, "{name}_bucket{labels} {cumulative}");
                        }
                        let labels_inf = render_labels(labels, Some("+Inf"));
                        let _ = writeln!(out, "{name}_bucket{labels_inf} {}", state.count);
                        let plain = render_labels(labels, None);
                        let _ = writeln!(out, "{name}_sum{plain} {}", number(state.sum));
                        let _ = writeln!(out, "{name}_count{plain} {}", state.count);
                    }
                }
            }
        }
        out
    }
}

fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        value.to_string()
    }
}

fn render_labels(labels: &Labels, le: Option<&str>) -> String {
    if labels.is_empty() && le.is_none() {
        return String::new();
    }
    let mut out = String::from("{");
    let pairs = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(le.map(|le| ("le", le)));
    for (index, (key, value)) in pairs.enumerate() {
        if index > 0 {
            out.push(',');
        }
        let _ = write!(out, "{key}=\"{}\"", escape_label(value));
    }
    out.push('}');
    out
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let recorder = PrometheusRecorder::new();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::describe_counter!("jobs_total", "Jobs \"done\".");
            metrics::counter!("jobs_total", "queue" => "a\"b").increment(3);
            metrics::counter!("jobs_total", "queue" => "a\"b").increment(2);
            metrics::gauge!("depth").set(1.5);
            metrics::histogram!("took_seconds").record(0.02);
            metrics::histogram!("took_seconds").record(20.0);
        });
        let text = handle.render();
        let expected = "\
# TYPE depth gauge
depth 1.5
# HELP jobs_total Jobs \"done\".
# TYPE jobs_total counter
jobs_total{queue=\"a\\\"b\"} 5
# TYPE took_seconds histogram
";
        assert!(text.starts_with(expected), "{text}");
        assert!(
            text.contains("took_seconds_bucket{le=\"0.01\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("took_seconds_bucket{le=\"0.025\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("took_seconds_bucket{le=\"10\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("took_seconds_bucket{le=\"+Inf\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("took_seconds_sum 20.02\n"), "{text}");
        assert!(text.contains("took_seconds_count 2\n"), "{text}");
    }
}
