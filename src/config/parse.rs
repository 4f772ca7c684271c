//! How the values of settings are read: the parsers clap calls for types it cannot read itself.
use std::{net::SocketAddr, time::Duration};

use super::{CONSUMERS, MetricsExposure, settings::ConsumerNames};

pub fn seconds(value: &str) -> Result<Duration, String> {
    Ok(Duration::from_secs(number(value)?))
}

/// Seconds, at least one: a period of zero would spin or close at once.
pub fn positive_seconds(value: &str) -> Result<Duration, String> {
    match number(value)? {
        0 => Err("must be at least 1".into()),
        seconds => Ok(Duration::from_secs(seconds)),
    }
}

pub fn millis(value: &str) -> Result<Duration, String> {
    Ok(Duration::from_millis(number(value)?))
}

pub fn days(value: &str) -> Result<Duration, String> {
    number(value)?
        .checked_mul(24 * 3600)
        .map(Duration::from_secs)
        .ok_or_else(|| "is too many days".into())
}

fn number(value: &str) -> Result<u64, String> {
    value
        .parse()
        .map_err(|_| format!("`{value}` is not a whole number"))
}

/// `on` or `off` (and `true` or `false`).
pub fn switch(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        other => Err(format!("`{other}` is neither `on` nor `off`")),
    }
}

pub fn secret(value: &str) -> Result<secrecy::SecretString, String> {
    Ok(secrecy::SecretString::from(value))
}

/// A comma-separated list; empty entries are skipped.
pub fn list(value: &str) -> Result<Vec<String>, String> {
    Ok(value
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(String::from)
        .collect())
}

pub fn metrics(value: &str) -> Result<MetricsExposure, String> {
    match value {
        "off" => Ok(MetricsExposure::Off),
        "on" => Ok(MetricsExposure::SamePort),
        address => address
            .parse::<SocketAddr>()
            .map(MetricsExposure::Own)
            .map_err(|_| format!("`{address}` is none of `off`, `on` or an address:port")),
    }
}

/// `TRUSTED_PROXIES`: comma-separated CIDRs or single addresses.
pub fn trusted_proxies(list: &str) -> Result<Vec<ipnet::IpNet>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            entry
                .parse::<ipnet::IpNet>()
                .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("`{entry}` is neither a CIDR nor an IP address"))
        })
        .collect()
}

/// `CONSUMERS`: names from [`CONSUMERS`], comma-separated, or `none`. A list of no names (`,`) is
/// refused rather than read as `none`: a slip should not quietly stop notifications.
pub fn consumers(list: &str) -> Result<ConsumerNames, String> {
    let names: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .collect();
    match names.as_slice() {
        [] => return Err("is empty: name the consumers to run, or `none`".to_string()),
        ["none"] => return Ok(ConsumerNames(Vec::new())),
        _ if names.contains(&"none") => {
            return Err("`none` cannot be combined with consumer names".to_string());
        }
        _ => {}
    }
    let mut chosen = Vec::new();
    for name in names {
        let known = CONSUMERS
            .iter()
            .find(|known| **known == name)
            .ok_or_else(|| {
                format!(
                    "`{name}` is not a consumer (there are: {})",
                    CONSUMERS.join(", ")
                )
            })?;
        if !chosen.contains(known) {
            chosen.push(*known);
        }
    }
    Ok(ConsumerNames(chosen))
}
