//! The heap's own figures on `/metrics`, read from jemalloc (the binary's global
//! allocator) at each scrape: what Rust code holds live, and what the allocator keeps
//! resident for it. RSS minus `resident` is the rest of the process: GStreamer's and
//! x264's buffers (glibc's malloc), stacks and code. A rising `resident` with a flat
//! `allocated` is fragmentation; both rising is data the node still holds.
//!
//! In a build whose global allocator is not jemalloc (the library's own tests), the
//! figures are jemalloc's idle ones, near zero.

use prometheus::{core::Collector, core::Desc, proto::MetricFamily, IntGauge, Registry};
use tikv_jemalloc_ctl::{epoch, stats};

/// Gauges refreshed from jemalloc's statistics whenever the registry is gathered.
#[derive(Clone)]
pub struct HeapStats {
    allocated: IntGauge,
    resident: IntGauge,
    retained: IntGauge,
}

impl HeapStats {
    /// Registers the gauges on `r`.
    pub fn register(r: &Registry) {
        let g = |name: &str, help: &str| IntGauge::new(name, help).expect("valid");
        let s = Self {
            allocated: g(
                "estuary_heap_allocated_bytes",
                "Bytes the node's Rust code holds live on the heap (jemalloc stats.allocated)",
            ),
            resident: g(
                "estuary_heap_resident_bytes",
                "Bytes of physical memory jemalloc holds: live data, its metadata and freed \
                 pages not yet given back (stats.resident)",
            ),
            retained: g(
                "estuary_heap_retained_bytes",
                "Virtual memory jemalloc gave back to the kernel but keeps mapped for reuse \
                 (stats.retained; not in RSS)",
            ),
        };
        r.register(Box::new(s))
            .expect("metric names are unique and valid");
    }
}

impl Collector for HeapStats {
    fn desc(&self) -> Vec<&Desc> {
        [&self.allocated, &self.resident, &self.retained]
            .into_iter()
            .flat_map(|g| g.desc())
            .collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // jemalloc's statistics are a snapshot taken when the epoch advances.
        if epoch::advance().is_ok() {
            let set = |g: &IntGauge, v: Result<usize, _>| {
                if let Ok(v) = v {
                    g.set(i64::try_from(v).unwrap_or(i64::MAX));
                }
            };
            set(&self.allocated, stats::allocated::read());
            set(&self.resident, stats::resident::read());
            set(&self.retained, stats::retained::read());
        }
        [&self.allocated, &self.resident, &self.retained]
            .into_iter()
            .flat_map(|g| g.collect())
            .collect()
    }
}
