//! CPU and memory tier tables: what `LOW`, `HIGH`, ... mean in cores and GiB.

use serde::{Deserialize, Serialize};

use crate::annotations::{ResourceRequest, Tier};

/// Amounts per tier for one resource.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TierTable {
    /// `MICRO`
    pub micro: f64,
    /// `LOW` (also the fallback)
    pub low: f64,
    /// `HIGH`
    pub high: f64,
    /// `TURBO`
    pub turbo: f64,
    /// `MAX`, and the cap for explicit amounts.
    pub max: f64,
}

impl TierTable {
    /// Upstream executor-k8s CPU defaults in cores: 0.5 / 2 / 6 / 12 / 12.
    pub const CPU_DEFAULT: TierTable = TierTable {
        micro: 0.5,
        low: 2.0,
        high: 6.0,
        turbo: 12.0,
        max: 12.0,
    };
    /// Upstream executor-k8s memory defaults in GiB: 1 / 2 / 12 / 16 / 16.
    pub const RAM_DEFAULT: TierTable = TierTable {
        micro: 1.0,
        low: 2.0,
        high: 12.0,
        turbo: 16.0,
        max: 16.0,
    };

    /// The amount for a tier.
    pub fn tier(&self, t: Tier) -> f64 {
        match t {
            Tier::Micro => self.micro,
            Tier::Low => self.low,
            Tier::High => self.high,
            Tier::Turbo => self.turbo,
            Tier::Max => self.max,
        }
    }

    /// Resolves a request: a tier's amount, an explicit amount capped at `max`, or `LOW`.
    pub fn resolve(&self, req: Option<ResourceRequest>) -> f64 {
        match req {
            None => self.low,
            Some(ResourceRequest::Tier(t)) => self.tier(t),
            Some(ResourceRequest::Amount(n)) => f64::from(n).min(self.max),
        }
    }
}

/// CPU and RAM tables together.
///
/// ```
/// use executor_base::{ResourceTable, ResourceRequest, Tier};
/// let t = ResourceTable::default();
/// assert_eq!(t.cpu_millis(Some(ResourceRequest::Tier(Tier::High))), 6000);
/// assert_eq!(t.cpu_millis(Some(ResourceRequest::Amount(64))), 12000); // capped at MAX
/// assert_eq!(t.memory_bytes(None), 2 * 1024 * 1024 * 1024);           // LOW
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ResourceTable {
    /// Cores per CPU tier.
    pub cpu: TierTable,
    /// GiB per RAM tier.
    pub ram: TierTable,
}

impl Default for ResourceTable {
    fn default() -> Self {
        Self {
            cpu: TierTable::CPU_DEFAULT,
            ram: TierTable::RAM_DEFAULT,
        }
    }
}

impl Default for TierTable {
    fn default() -> Self {
        TierTable::CPU_DEFAULT
    }
}

impl ResourceTable {
    /// CPU in millicores (k8s `"<n>m"`, Docker `NanoCpus / 1e6`).
    pub fn cpu_millis(&self, req: Option<ResourceRequest>) -> u64 {
        (self.cpu.resolve(req) * 1000.0).round() as u64
    }

    /// Memory in bytes.
    pub fn memory_bytes(&self, req: Option<ResourceRequest>) -> u64 {
        (self.ram.resolve(req) * 1024.0 * 1024.0 * 1024.0).round() as u64
    }
}
