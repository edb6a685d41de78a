//! The values the operator reasons about, free of Kubernetes clients and HTTP: endpoints and
//! URLs, credentials and their renewal, and what a gateway's answer means.

pub mod credential;
pub mod diagnosis;
pub mod endpoint;
pub mod renewal;
pub mod secret_codec;
pub mod url;

/// FNV-1a, 64 bits: a hash that is stable across Rust versions and processes, unlike the
/// standard library's, for jitter and change fingerprints (never for security).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `namespace/name` in one allocation (neither can contain a slash): the key of the operator's
/// in-memory maps, which hold a few per access.
pub fn packed_name<T: From<String>>(namespace: &str, name: &str) -> T {
    format!("{namespace}/{name}").into()
}
