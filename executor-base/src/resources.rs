//! CPU and memory tier tables: what `LOW`, `HIGH`, ... mean in cores and GiB.
//!
//! A configuration may give only some tiers (`[resources.ram] high = 20`): the others keep
//! *their resource's* defaults ([`TierTable::CPU_DEFAULT`] for `cpu`,
//! [`TierTable::RAM_DEFAULT`] for `ram`), never the other resource's.

use serde::{Deserialize, Deserializer, Serialize};

use crate::annotations::{ResourceRequest, Tier};

/// Amounts per tier for one resource.
///
/// Deserialised on its own, every tier must be given; inside a [`ResourceTable`] missing
/// tiers take that resource's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
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

/// Some tiers of one resource, as a configuration gives them.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PartialTiers {
    micro: Option<f64>,
    low: Option<f64>,
    high: Option<f64>,
    turbo: Option<f64>,
    max: Option<f64>,
}

impl PartialTiers {
    /// The given tiers over `defaults`.
    fn over(self, defaults: TierTable) -> TierTable {
        TierTable {
            micro: self.micro.unwrap_or(defaults.micro),
            low: self.low.unwrap_or(defaults.low),
            high: self.high.unwrap_or(defaults.high),
            turbo: self.turbo.unwrap_or(defaults.turbo),
            max: self.max.unwrap_or(defaults.max),
        }
    }
}

fn cpu_tiers<'de, D: Deserializer<'de>>(d: D) -> Result<TierTable, D::Error> {
    PartialTiers::deserialize(d).map(|p| p.over(TierTable::CPU_DEFAULT))
}

fn ram_tiers<'de, D: Deserializer<'de>>(d: D) -> Result<TierTable, D::Error> {
    PartialTiers::deserialize(d).map(|p| p.over(TierTable::RAM_DEFAULT))
}

/// CPU and RAM tables together.
///
/// A partial table keeps each resource's own defaults for the tiers it does not give:
///
/// ```
/// use executor_base::{ResourceTable, TierTable};
/// let t: ResourceTable = serde_json::from_str(r#"{"ram": {"high": 20}}"#).unwrap();
/// assert_eq!(t.ram, TierTable { high: 20.0, ..TierTable::RAM_DEFAULT });
/// assert_eq!(t.cpu, TierTable::CPU_DEFAULT);
/// ```
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
    #[serde(deserialize_with = "cpu_tiers")]
    pub cpu: TierTable,
    /// GiB per RAM tier.
    #[serde(deserialize_with = "ram_tiers")]
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

#[cfg(test)]
mod tests {
    use super::*;

    const TIERS: [&str; 5] = ["micro", "low", "high", "turbo", "max"];

    fn with_tier(base: TierTable, tier: &str, v: f64) -> TierTable {
        let mut t = base;
        match tier {
            "micro" => t.micro = v,
            "low" => t.low = v,
            "high" => t.high = v,
            "turbo" => t.turbo = v,
            _ => t.max = v,
        }
        t
    }

    #[test]
    fn overriding_one_tier_keeps_each_resources_own_defaults() {
        for resource in ["cpu", "ram"] {
            for tier in TIERS {
                let json = format!(r#"{{"{resource}": {{"{tier}": 99}}}}"#);
                let t: ResourceTable = serde_json::from_str(&json).unwrap();
                let (changed, untouched, defaults, other) = match resource {
                    "cpu" => (t.cpu, t.ram, TierTable::CPU_DEFAULT, TierTable::RAM_DEFAULT),
                    _ => (t.ram, t.cpu, TierTable::RAM_DEFAULT, TierTable::CPU_DEFAULT),
                };
                assert_eq!(changed, with_tier(defaults, tier, 99.0), "{json}");
                assert_eq!(untouched, other, "{json}");
            }
        }
    }

    #[test]
    fn partial_overrides_of_both_resources() {
        let t: ResourceTable = serde_json::from_str(
            r#"{"cpu": {"low": 1, "max": 32}, "ram": {"micro": 0.5, "turbo": 24}}"#,
        )
        .unwrap();
        assert_eq!(
            t.cpu,
            TierTable {
                low: 1.0,
                max: 32.0,
                ..TierTable::CPU_DEFAULT
            }
        );
        assert_eq!(
            t.ram,
            TierTable {
                micro: 0.5,
                turbo: 24.0,
                ..TierTable::RAM_DEFAULT
            }
        );
        // HIGH RAM stays 12 GiB, not the CPU table's 6.
        assert_eq!(
            t.memory_bytes(Some(ResourceRequest::Tier(Tier::High))),
            12 << 30
        );
        let empty: ResourceTable = serde_json::from_str(r#"{"ram": {}}"#).unwrap();
        assert_eq!(empty, ResourceTable::default());
        let none: ResourceTable = serde_json::from_str("{}").unwrap();
        assert_eq!(none, ResourceTable::default());
    }

    #[test]
    fn round_trip_and_bad_values() {
        let t = ResourceTable::default();
        let back: ResourceTable = serde_json::from_value(serde_json::to_value(t).unwrap()).unwrap();
        assert_eq!(back, t);
        assert!(serde_json::from_str::<ResourceTable>(r#"{"ram": {"high": "lots"}}"#).is_err());
    }
}
