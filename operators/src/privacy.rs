//! Differential-privacy noise: the Laplace mechanism for what a site releases under its
//! policy's `noise`, and the Gaussian mechanism for `CREATE MODEL`'s central noise.
//!
//! Why OpenDP (the `opendp` crate, MIT) and not a sampler written here: its mechanisms are
//! proven, sample exactly (no floating-point attacks on naive Laplace samplers), and with
//! its `use-openssl` feature every draw comes from OpenSSL's `RAND_priv_bytes`, a
//! cryptographic generator seeded by the operating system: nothing a user sets (a `seed`
//! option) can reproduce the noise and subtract it. Its `contrib` feature is the one that
//! holds these mechanisms (OpenDP's Python users enable the same).

use opendp::domains::{AtomDomain, VectorDomain};
use opendp::measurements::{make_gaussian, make_laplace};
use opendp::measures::{MaxDivergence, ZeroConcentratedDivergence};
use opendp::metrics::{AbsoluteDistance, L2Distance};

/// `value` plus Laplace noise of `scale` (sensitivity / epsilon).
pub fn laplace(value: f64, scale: f64) -> Result<f64, String> {
    if !value.is_finite() {
        // Nothing to hide in a non-finite value (an empty group's NaN, an overflowed sum),
        // and OpenDP's domain refuses it: release it as is.
        return Ok(value);
    }
    make_laplace::<_, _, MaxDivergence>(
        AtomDomain::<f64>::new_non_nan(),
        AbsoluteDistance::<f64>::default(),
        scale,
        None,
    )
    .and_then(|m| m.invoke(&value))
    .map_err(|e| format!("Laplace noise (scale {scale}): {e}"))
}

/// An integer count plus discrete Laplace noise of `scale`.
pub fn laplace_count(value: i64, scale: f64) -> Result<i64, String> {
    make_laplace::<_, _, MaxDivergence>(
        AtomDomain::<i64>::default(),
        AbsoluteDistance::<i64>::default(),
        scale,
        None,
    )
    .and_then(|m| m.invoke(&value))
    .map_err(|e| format!("Laplace noise (scale {scale}): {e}"))
}

/// `values` plus independent Gaussian noise of standard deviation `std` each.
pub fn gaussian(values: &[f64], std: f64) -> Result<Vec<f64>, String> {
    if std <= 0.0 {
        return Ok(values.to_vec());
    }
    make_gaussian::<_, _, ZeroConcentratedDivergence>(
        VectorDomain::new(AtomDomain::<f64>::new_non_nan()),
        L2Distance::<f64>::default(),
        std,
        None,
    )
    .and_then(|m| m.invoke(&values.to_vec()))
    .map_err(|e| format!("Gaussian noise (std {std}): {e}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn noise_has_the_scale_asked_and_is_never_the_same_twice() {
        let draws: Vec<f64> = (0..4000).map(|_| laplace(0.0, 2.0).unwrap()).collect();
        // Laplace(b): mean |x| = b.
        let mean_abs = draws.iter().map(|x| x.abs()).sum::<f64>() / draws.len() as f64;
        assert!((mean_abs - 2.0).abs() < 0.2, "{mean_abs}");
        let counts: Vec<i64> = (0..2000)
            .map(|_| laplace_count(100, 1.0).unwrap())
            .collect();
        assert!(counts.iter().any(|c| *c != 100) && counts.iter().all(|c| (c - 100).abs() < 40));
        let a = gaussian(&[0.0; 64], 1.0).unwrap();
        let b = gaussian(&[0.0; 64], 1.0).unwrap();
        assert_ne!(a, b, "two runs never draw the same noise (no seed)");
        let var = a.iter().map(|x| x * x).sum::<f64>() / 64.0;
        assert!(var > 0.3 && var < 2.5, "{var}");
        assert!(laplace(f64::NAN, 1.0).unwrap().is_nan());
    }
}
