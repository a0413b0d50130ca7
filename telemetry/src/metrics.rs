//! Instruments for hot paths and the Prometheus text exposition format.
//!
//! An observation touches only atomics with relaxed ordering: a [`Counter`] one add, a
//! [`Histogram`] two (its bucket and its sum; the count is the sum of the buckets). Finding
//! a histogram's bucket is a division and a count of leading zeros, because every bucket
//! layout is geometric with a power-of-two ratio ([`Layout`]). Nothing allocates or locks on
//! that path.
//!
//! Labels are resolved once: [`Family::with`] takes a lock and may allocate, and returns a
//! `&'static` handle that the caller keeps (a writer keeps its log's handles for its life).
//! Series are never removed, as in Go Woodpecker's registries: a handle stays valid for the
//! life of the process, so the memory of a series (a few hundred bytes) is held until exit.
//!
//! Reading (a scrape) walks the series under the family's lock and reads each atomic once;
//! a histogram's buckets and sum are not read in one instant, which Prometheus tolerates.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// The most buckets (including `+Inf`) a histogram can have.
pub const MAX_BUCKETS: usize = 24;

/// A monotonic counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// A counter at zero.
    pub const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// A gauge at zero.
    pub const fn new() -> Self {
        Gauge(AtomicI64::new(0))
    }

    /// Adds `n` (negative to subtract).
    #[inline]
    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets the value.
    #[inline]
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The bucket bounds of a histogram: `bounds` finite upper bounds `unit × 2^(step × i)` for
/// `i` in `0..bounds`, then `+Inf`. Values are recorded as integers in a base unit
/// (nanoseconds, bytes) and exported divided by `divisor` (nanoseconds to milliseconds is
/// `1e6`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Layout {
    unit: u64,
    step: u32,
    bounds: usize,
    divisor: f64,
}

impl Layout {
    /// A layout; panics (at compile time in a `const`) when it does not fit
    /// [`MAX_BUCKETS`] or would overflow.
    pub const fn new(unit: u64, step: u32, bounds: usize, divisor: f64) -> Self {
        assert!(unit > 0 && step > 0 && bounds >= 1 && bounds < MAX_BUCKETS);
        assert!((step as usize) * (bounds - 1) < 64);
        assert!(unit <= (u64::MAX >> (step as usize * (bounds - 1))));
        Layout {
            unit,
            step,
            bounds,
            divisor,
        }
    }

    /// Latency in milliseconds, as Go Woodpecker exports it: bounds from 1/64 ms
    /// (15.6 µs) doubling to 16,384 ms. Observe nanoseconds.
    pub const MILLIS: Layout = Layout::new(15_625, 1, 21, 1e6);

    /// Latency in seconds (Prometheus' unit): bounds from 15.6 µs doubling to 16.4 s.
    /// Observe nanoseconds.
    pub const SECONDS: Layout = Layout::new(15_625, 1, 21, 1e9);

    /// Sizes from 256 bytes in steps of 4 to 4 MiB (Go Woodpecker's `append_bytes`).
    pub const APPEND_BYTES: Layout = Layout::new(256, 2, 8, 1.0);

    /// Sizes from 1 KiB in steps of 4 to 16 MiB (Go Woodpecker's object request sizes).
    pub const REQUEST_BYTES: Layout = Layout::new(1024, 2, 8, 1.0);

    /// The bucket of `v`: the first whose bound is at least `v`, else `+Inf`.
    #[inline]
    pub fn index(&self, v: u64) -> usize {
        if v <= self.unit {
            return 0;
        }
        // q = ceil(v / unit) >= 2; the bucket is ceil(log2(q) / step).
        let q = v.div_ceil(self.unit);
        let log2 = u64::BITS - (q - 1).leading_zeros();
        (log2.div_ceil(self.step) as usize).min(self.bounds)
    }

    /// The upper bound of bucket `i` in exported units (`None` for `+Inf`).
    pub fn bound(&self, i: usize) -> Option<f64> {
        (i < self.bounds).then(|| (self.unit << (self.step as usize * i)) as f64 / self.divisor)
    }

    /// Buckets including `+Inf`.
    pub fn len(&self) -> usize {
        self.bounds + 1
    }

    /// Always false: a layout has at least one bound.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// `v` in exported units.
    pub fn export(&self, v: u64) -> f64 {
        v as f64 / self.divisor
    }
}

/// A histogram: per-bucket counts and the sum of what was observed.
#[derive(Debug)]
pub struct Histogram {
    layout: &'static Layout,
    counts: [AtomicU64; MAX_BUCKETS],
    sum: AtomicU64,
}

/// What a histogram held when it was read.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Cumulative counts per bucket, `+Inf` last, with their upper bounds.
    pub buckets: Vec<(Option<f64>, u64)>,
    /// Observations.
    pub count: u64,
    /// Their sum, in exported units.
    pub sum: f64,
}

impl Histogram {
    /// An empty histogram with `layout`.
    pub const fn new(layout: &'static Layout) -> Self {
        Histogram {
            layout,
            counts: [const { AtomicU64::new(0) }; MAX_BUCKETS],
            sum: AtomicU64::new(0),
        }
    }

    /// Records `v` in the layout's base unit (nanoseconds, bytes).
    #[inline]
    pub fn observe(&self, v: u64) {
        self.counts[self.layout.index(v)].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(v, Ordering::Relaxed);
    }

    /// Records a duration (layouts in nanoseconds).
    #[inline]
    pub fn observe_duration(&self, d: Duration) {
        self.observe(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// The layout.
    pub fn layout(&self) -> &'static Layout {
        self.layout
    }

    /// The current counts and sum.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let buckets = (0..self.layout.len())
            .map(|i| {
                cumulative += self.counts[i].load(Ordering::Relaxed);
                (self.layout.bound(i), cumulative)
            })
            .collect();
        HistogramSnapshot {
            buckets,
            count: cumulative,
            sum: self.layout.export(self.sum.load(Ordering::Relaxed)),
        }
    }
}

/// What kind of metric a family holds, for `# TYPE`.
pub trait Instrument: Send + Sync + 'static {
    /// What a new series is made from.
    type Init: Copy + Send + Sync + 'static;
    /// A new, empty series.
    fn create(init: Self::Init) -> Self;
    /// `counter`, `gauge` or `histogram`.
    const KIND: &'static str;
    /// Writes the series' sample lines; `labels` is the rendered label set (`a="1",b="2"`,
    /// possibly empty).
    fn write_samples(&self, out: &mut String, name: &str, labels: &str);
}

impl Instrument for Counter {
    type Init = ();
    fn create((): ()) -> Self {
        Counter::new()
    }
    const KIND: &'static str = "counter";
    fn write_samples(&self, out: &mut String, name: &str, labels: &str) {
        let _ = writeln!(out, "{name}{} {}", Braces(labels), self.get());
    }
}

impl Instrument for Gauge {
    type Init = ();
    fn create((): ()) -> Self {
        Gauge::new()
    }
    const KIND: &'static str = "gauge";
    fn write_samples(&self, out: &mut String, name: &str, labels: &str) {
        let _ = writeln!(out, "{name}{} {}", Braces(labels), self.get());
    }
}

impl Instrument for Histogram {
    type Init = &'static Layout;
    fn create(layout: &'static Layout) -> Self {
        Histogram::new(layout)
    }
    const KIND: &'static str = "histogram";
    fn write_samples(&self, out: &mut String, name: &str, labels: &str) {
        let snap = self.snapshot();
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, n) in &snap.buckets {
            match bound {
                Some(b) => {
                    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {n}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {n}");
                }
            }
        }
        let _ = writeln!(out, "{name}_sum{} {}", Braces(labels), snap.sum);
        let _ = writeln!(out, "{name}_count{} {}", Braces(labels), snap.count);
    }
}

/// `{labels}`, or nothing for an empty label set.
struct Braces<'a>(&'a str);

impl fmt::Display for Braces<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            Ok(())
        } else {
            write!(f, "{{{}}}", self.0)
        }
    }
}

/// Renders `names` = `values` as a Prometheus label set (`a="x",b="y"`), escaping the
/// values.
pub fn label_set(names: &[&str], values: &[&str]) -> String {
    let mut out = String::new();
    for (i, (n, v)) in names.iter().zip(values).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(n);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out
}

/// Writes `# HELP` and `# TYPE` of a metric.
pub fn write_header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A named metric with labels: one series per label set, created on first use.
#[derive(Debug)]
pub struct Family<M: Instrument> {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    init: M::Init,
    series: Mutex<BTreeMap<Vec<String>, &'static M>>,
}

impl<M: Instrument> Family<M> {
    /// A family; `labels` are the label names every series gives values for.
    pub const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        init: M::Init,
    ) -> Self {
        Family {
            name,
            help,
            labels,
            init,
            series: Mutex::new(BTreeMap::new()),
        }
    }

    /// The metric name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The label names.
    pub fn label_names(&self) -> &'static [&'static str] {
        self.labels
    }

    /// The series of `values` (one per label name, in order), created when new. Keep the
    /// handle: this call locks and may allocate, observing through the handle does neither.
    ///
    /// # Panics
    ///
    /// When `values` does not have one value per label name (a programming error).
    pub fn with(&self, values: &[&str]) -> &'static M {
        assert_eq!(
            values.len(),
            self.labels.len(),
            "{}: label values {values:?} for names {:?}",
            self.name,
            self.labels
        );
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let key: Vec<String> = values.iter().map(|v| (*v).to_string()).collect();
        if let Some(m) = series.get(&key) {
            return m;
        }
        let m: &'static M = Box::leak(Box::new(M::create(self.init)));
        series.insert(key, m);
        m
    }

    /// Writes the family in the text format; a family with no series writes only its
    /// header.
    pub fn render(&self, out: &mut String) {
        write_header(out, self.name, self.help, M::KIND);
        let series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        for (values, m) in series.iter() {
            let values: Vec<&str> = values.iter().map(String::as_str).collect();
            m.write_samples(out, self.name, &label_set(self.labels, &values));
        }
    }
}

/// Something [`render_all`] can write.
pub trait Render: Sync {
    /// Writes this metric in the text format.
    fn render(&self, out: &mut String);
    /// Its name.
    fn metric_name(&self) -> &'static str;
}

impl<M: Instrument> Render for Family<M> {
    fn render(&self, out: &mut String) {
        Family::render(self, out);
    }
    fn metric_name(&self) -> &'static str {
        self.name
    }
}

/// Writes every metric of `all`.
pub(crate) fn render_all(all: &[&dyn Render], out: &mut String) {
    for m in all {
        m.render(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_lands_in_the_first_bucket_whose_bound_holds_it() {
        for layout in [
            Layout::MILLIS,
            Layout::SECONDS,
            Layout::APPEND_BYTES,
            Layout::REQUEST_BYTES,
            Layout::new(3, 3, 5, 1.0),
        ] {
            let raw_bound =
                |i: usize| (i < layout.bounds).then(|| layout.unit << (layout.step as usize * i));
            let mut probes = vec![0, 1, u64::MAX];
            for i in 0..layout.bounds {
                let b = raw_bound(i).unwrap();
                probes.extend([b - 1, b, b + 1]);
            }
            for v in probes {
                let i = layout.index(v);
                // v fits bucket i, and not bucket i - 1.
                if let Some(b) = raw_bound(i) {
                    assert!(v <= b, "{layout:?}: {v} in bucket {i} of bound {b}");
                } else {
                    assert_eq!(i, layout.bounds);
                    assert!(v > raw_bound(layout.bounds - 1).unwrap(), "{v}");
                }
                if i > 0 {
                    assert!(
                        v > raw_bound(i - 1).unwrap(),
                        "{layout:?}: {v} below bucket {i}"
                    );
                }
            }
        }
    }

    #[test]
    fn exported_bounds_are_exact() {
        assert_eq!(Layout::MILLIS.bound(0), Some(0.015625));
        assert_eq!(Layout::MILLIS.bound(6), Some(1.0));
        assert_eq!(Layout::MILLIS.bound(20), Some(16384.0));
        assert_eq!(Layout::MILLIS.bound(21), None);
        assert_eq!(Layout::SECONDS.bound(0), Some(0.000015625));
        assert_eq!(Layout::SECONDS.bound(16), Some(1.024));
        assert_eq!(Layout::APPEND_BYTES.bound(7), Some(4.0 * 1024.0 * 1024.0));
        assert_eq!(Layout::REQUEST_BYTES.bound(7), Some(16.0 * 1024.0 * 1024.0));
        assert_eq!(
            format!("{}", Layout::SECONDS.bound(0).unwrap()),
            "0.000015625"
        );
    }

    #[test]
    fn a_histogram_renders_cumulative_buckets_sum_and_count() {
        static H: Family<Histogram> = Family::new("t_latency", "Test.", &["op"], &Layout::MILLIS);
        let h = H.with(&["put"]);
        h.observe_duration(Duration::from_micros(10)); // bucket 0 (<= 15.625 us)
        h.observe_duration(Duration::from_millis(1)); // bucket 6 (<= 1 ms)
        h.observe_duration(Duration::from_secs(100)); // +Inf
        assert!(std::ptr::eq(h, H.with(&["put"])));
        let mut out = String::new();
        H.render(&mut out);
        assert!(out.starts_with("# HELP t_latency Test.\n# TYPE t_latency histogram\n"));
        assert!(
            out.contains("t_latency_bucket{op=\"put\",le=\"0.015625\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("t_latency_bucket{op=\"put\",le=\"0.5\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("t_latency_bucket{op=\"put\",le=\"1\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("t_latency_bucket{op=\"put\",le=\"16384\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("t_latency_bucket{op=\"put\",le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("t_latency_sum{op=\"put\"} 100001.01\n"),
            "{out}"
        );
        assert!(out.contains("t_latency_count{op=\"put\"} 3\n"), "{out}");
    }

    #[test]
    fn counters_gauges_and_label_escaping() {
        static C: Family<Counter> = Family::new("t_total", "Count.", &["name"], ());
        static G: Family<Gauge> = Family::new("t_open", "Open.", &[], ());
        C.with(&["a\"b\\c\nd"]).add(5);
        G.with(&[]).add(3);
        G.with(&[]).add(-1);
        let mut out = String::new();
        render_all(&[&C, &G], &mut out);
        assert!(
            out.contains("t_total{name=\"a\\\"b\\\\c\\nd\"} 5\n"),
            "{out}"
        );
        assert!(out.contains("# TYPE t_open gauge\nt_open 2\n"), "{out}");
    }

    #[test]
    #[should_panic(expected = "label values")]
    fn a_wrong_number_of_label_values_is_refused() {
        static C: Family<Counter> = Family::new("t2_total", "Count.", &["a", "b"], ());
        C.with(&["only one"]);
    }
}
