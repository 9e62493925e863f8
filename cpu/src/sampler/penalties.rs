//! llama.cpp's penalties sampler: repetition, frequency and presence penalties over the
//! last `repeat_last_n` tokens.

/// For each distinct token seen `c` times in `window`, the repetition penalty `repeat`
/// divides a positive logit (multiplies a non-positive one), then `c × freq + presence` is
/// subtracted. Tokens outside `logits` are skipped.
pub(super) fn apply(
    logits: &mut [f32],
    window: impl Iterator<Item = u32>,
    repeat: f32,
    freq: f32,
    presence: f32,
) {
    if repeat == 1.0 && freq == 0.0 && presence == 0.0 {
        return;
    }
    let mut seen: Vec<u32> = window.collect();
    seen.sort_unstable();
    for run in seen.chunk_by(|a, b| a == b) {
        if let Some(l) = logits.get_mut(run[0] as usize) {
            if repeat != 1.0 {
                *l = if *l > 0.0 { *l / repeat } else { *l * repeat };
            }
            *l -= run.len() as f32 * freq + presence;
        }
    }
}
