//! Fuzz `KvPolicy::parse`: arbitrary text parses to a policy or an error, never a panic; a
//! parsed policy prints as text that parses back to the same policy (and prints the same
//! again), and resolving it against any context size, page size and layer count is a rule
//! or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pagoda_core::evict::{EvictionRule, KvPolicy};

/// The input: four little-endian u64 sizes (context, page, layer, layer count; missing
/// bytes are zeros), then the policy text (lossy UTF-8), so seeds are readable text after
/// 32 bytes.
struct Input {
    text: String,
    n_ctx: usize,
    block_size: usize,
    layer: usize,
    n_layers: usize,
}

fn input(data: &[u8]) -> Input {
    let mut head = [0u8; 32];
    let n = data.len().min(32);
    head[..n].copy_from_slice(&data[..n]);
    let word = |i: usize| u64::from_le_bytes(head[i * 8..i * 8 + 8].try_into().unwrap()) as usize;
    Input {
        text: String::from_utf8_lossy(&data[n..]).into_owned(),
        n_ctx: word(0),
        block_size: word(1),
        layer: word(2),
        n_layers: word(3),
    }
}

/// Context, page and layer sizes: mostly small and realistic, sometimes anything.
fn size(raw: usize, small: usize) -> usize {
    if raw & 1 == 0 {
        (raw >> 1) % small
    } else {
        raw
    }
}

fn check_rule(rule: &EvictionRule, block_size: usize) {
    let _ = rule.max_pages(block_size);
}

fuzz_target!(|data: &[u8]| {
    let input = input(data);
    let Ok(policy) = KvPolicy::parse(&input.text) else { return };
    let text = policy.to_string();
    assert_eq!(KvPolicy::parse(&text), Ok(policy), "{policy:?} printed as {text:?}");
    assert_eq!(KvPolicy::parse(&text).map(|p| p.to_string()), Ok(text.clone()));
    // The predicates agree with each other.
    assert!(!policy.per_layer() || policy.needs_attention_mass());
    assert!(!policy.needs_attention_mass() || policy.evicts());
    assert_eq!(policy.evicts(), policy != KvPolicy::Full);

    let n_ctx = size(input.n_ctx, 1 << 16);
    let bs = size(input.block_size, 256);
    // Any layer count: PyramidKV refuses counts above 2^16 (planning its budgets is O(n_layers)).
    let n_layers = size(input.n_layers, 64);
    let layer = size(input.layer, 64);
    match policy.resolve(n_ctx, bs) {
        Ok(rule) => {
            assert!(!policy.per_layer(), "a per-layer policy has no single rule");
            check_rule(&rule, bs);
        }
        Err(_) if policy.per_layer() => {}
        Err(e) => {
            // Only budgets can be too small for the page size.
            assert!(matches!(policy, KvPolicy::H2o(_)), "{policy:?}: {e}");
        }
    }
    if let Ok(rule) = policy.resolve_layer(n_ctx, bs, layer, n_layers) {
        check_rule(&rule, bs);
    }
});
