//! Statistics the judges use on counted outcomes. Pure functions, tested on known values.

/// The exact two-sided p-value of seeing `k` successes in `n` trials of probability `p`: the
/// probability, under Binomial(n, p), of an outcome no more likely than `k` (the "minimum
/// likelihood" method of R's `binom.test`). Computed in log space, so large `n` does not underflow.
pub fn binomial_two_sided_p(k: u64, n: u64, p: f64) -> f64 {
    if k > n {
        return 0.0;
    }
    if p <= 0.0 || p >= 1.0 {
        let certain = if p <= 0.0 { 0 } else { n };
        return if k == certain { 1.0 } else { 0.0 };
    }
    // ln P(X = i), by the ratio P(i + 1) / P(i) = (n - i) / (i + 1) · p / (1 - p).
    let mut ln = Vec::with_capacity(n as usize + 1);
    let mut current = n as f64 * (1.0 - p).ln();
    ln.push(current);
    for i in 0..n {
        current += ((n - i) as f64 / (i + 1) as f64).ln() + (p / (1.0 - p)).ln();
        ln.push(current);
    }
    let observed = ln[k as usize];
    let max = ln.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    // A relative tolerance, as binom.test uses, so that outcomes as likely as `k` count in full.
    let cutoff = observed + 1e-7_f64.ln_1p();
    let sum: f64 = ln.iter().filter(|&&l| l <= cutoff).map(|l| (l - max).exp()).sum();
    (sum * max.exp()).min(1.0)
}

/// The median of `values` (the mean of the middle two for an even count); `None` for none.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) { (sorted[mid - 1] + sorted[mid]) / 2.0 } else { sorted[mid] })
}

/// The smallest and the largest of `values`: the spread a handful of repetitions can honestly
/// claim (no standard deviation of five samples); `None` for none.
pub fn spread(values: &[f64]) -> Option<(f64, f64)> {
    let mut it = values.iter().copied().filter(|v| !v.is_nan());
    let first = it.next()?;
    Some(it.fold((first, first), |(lo, hi), v| (lo.min(v), hi.max(v))))
}
